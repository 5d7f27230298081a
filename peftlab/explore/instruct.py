"""InstructionExplorer (notebook 09): type an instruction and an input, read every model's answer.
"""

from __future__ import annotations

import html

import ipywidgets as W
import torch
from IPython.display import display

from ..instruct import (DEFAULT_TEMPLATE, NEW_FAMILIES, NEW_WORDINGS, PARAPHRASES, RULES, TRAINED_PHRASINGS, Template,
                        respond)


class InstructionExplorer:
    """Type an instruction (and an input) and read the answers of several models side by side.

    >>> from peftlab import load_base
    >>> ex = InstructionExplorer({"base": load_base()}, max_new_tokens=4)
    >>> sorted(ex.compare("Reverse the letters of the word.", "apple"))
    ['answers', 'prompt', 'rule']
    """

    def __init__(self, models: dict[str, torch.nn.Module], template: Template = DEFAULT_TEMPLATE,
                 max_new_tokens: int = 48):
        if not models:
            raise ValueError("models must name at least one model, e.g. {'base': ..., 'tuned': ...}")
        self.models, self.template, self.max_new_tokens = models, template, max_new_tokens
        self.instruction = W.Text(value=TRAINED_PHRASINGS["reverse"], description="instruction",
                                  layout=W.Layout(width="480px"))
        self.input = W.Text(value="lantern", description="input", layout=W.Layout(width="480px"))
        self.button = W.Button(description="Ask every model", button_style="primary")
        self.result = W.HTML()
        self.button.on_click(self.update)

    def compare(self, instruction: str, input: str = "") -> dict:
        """Each model's answer, the exact prompt, and the rule's answer where a trained or new
        family's instruction is typed word for word (None otherwise)."""
        prompt = self.template.prompt(instruction, input)  # raises on an empty instruction
        family = {v: k for d in (TRAINED_PHRASINGS, PARAPHRASES, NEW_WORDINGS, NEW_FAMILIES)
                  for k, v in d.items()}.get(instruction)
        rule = RULES[family](input) if family in RULES and input else None
        answers = {name: respond(m, [(instruction, input)], self.template, self.max_new_tokens)[0]
                   for name, m in self.models.items()}
        return {"prompt": prompt, "answers": answers, "rule": rule}

    def update(self, _=None) -> dict:
        try:
            r = self.compare(self.instruction.value, self.input.value)
        except ValueError as err:
            self.result.value = f"<b>error:</b> {err}"
            return {}
        rows = "".join(f"<tr><td><b>{name}</b></td><td><code>{html.escape(repr(answer))}</code></td></tr>"
                       for name, answer in r["answers"].items())
        if r["rule"] is not None:
            rows += f"<tr><td><i>rule</i></td><td><code>{html.escape(repr(r['rule']))}</code></td></tr>"
        self.result.value = f"<pre>{html.escape(r['prompt'])}</pre><table>{rows}</table>"
        return r

    def show(self) -> None:
        display(W.VBox([self.instruction, self.input, self.button, self.result]))
        self.update()
