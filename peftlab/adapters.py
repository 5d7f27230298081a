"""Bottleneck adapters (Houlsby et al. 2019) and AdapterFusion (Pfeiffer et al. 2021).

**Adapter** (Houlsby et al., arXiv 1902.00751, Sec. 2.1, Fig. 2). A small bottleneck network sits
after a sublayer and is added to that sublayer's output h (batch, seq, d):

    adapter(h) = h + W_up f(W_down h + b_down) + b_up

with W_down in R^{m x d}, W_up in R^{d x m}, bottleneck size m << d and a nonlinearity f.
W_up and b_up start at zero, so each adapter starts as exactly the identity and the model is unchanged:
peftlab's choice; Houlsby et al. start both projections near zero (small random weights), a near-identity.
Parameters, both projections with biases:

    per adapter per placement:  d*m + m  +  m*d + d  =  2*d*m + m + d
    per model:                  n_layers * len(placement) * (2*d*m + m + d)

Houlsby puts two adapters in every layer, after attention and after the MLP
(`placement=("attn", "mlp")`); the default here is one after the MLP (Pfeiffer's choice).
Our blocks are pre-norm, x = x + attn(norm(x)); x = x + mlp(norm(x)): the adapter acts on the
sublayer's output before it joins the residual stream, x = x + adapter(mlp(norm(x))). It is put
there by wrapping the sublayer (`block.mlp` becomes an `AdapterLayer` that holds the original
as `base_layer`), so `model.py` needs no change.

**AdapterFusion** (Pfeiffer et al., arXiv 2005.00247, Sec. 3.2, Eq. 3-6). Stage 1 trains one
adapter per task (`add`, then `train`). Stage 2 freezes them all and learns, in every adapted
sublayer, attention over their outputs. Per token, with h the sublayer's output (the adapters'
input) and a_n = W_up f(W_down h + b_down) + b_up the output of adapter n (as adapter-transformers
does, the bottleneck branch without the residual):

    s_n = softmax_n( (Q h) . (K a_n) )      weights over the N adapters, one set per token
    out = h + sum_n s_n V a_n

Q, K, V are d x d matrices without bias, as in the paper's equations (adapter-transformers gives
Q and K a bias): 3*d^2 parameters per fusion layer. Q and K start as N(0, 0.02^2), V as the
identity with 1e-6 off the diagonal (the paper's init), so fusion starts by averaging the
adapters' outputs. The paper's extra loss pulling V towards the identity is left out: `train()`
optimises the language-model loss alone.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as tensors_to_bytes
from torch import nn

from .checks import positive_int
from .files import check_together, write_together

PLACEMENTS = {"attn": "self_attn", "mlp": "mlp"}  # placement -> the Block attribute it wraps
NONLINEARITIES = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
FILES = {"adapter": ("bottleneck_config.json", "bottleneck.safetensors"),  # kind -> (settings, weights)
         "fusion": ("fusion_config.json", "fusion.safetensors")}


class BottleneckAdapter(nn.Module):
    """The adapter's branch W_up f(W_down h + b_down) + b_up; the residual h is added by `AdapterLayer`."""

    def __init__(self, d: int, m: int, nonlinearity: str):
        super().__init__()
        self.down = nn.Linear(d, m)  # W_down, b_down: PyTorch's Kaiming-uniform init
        self.act = NONLINEARITIES[nonlinearity]()
        self.up = nn.Linear(m, d)
        nn.init.zeros_(self.up.weight)  # zero W_up and b_up: the adapter starts as the identity
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(h)))


class Fusion(nn.Module):
    """Attention over N adapter outputs, query = the sublayer output h (Pfeiffer et al. Eq. 3-6)."""

    def __init__(self, adapter_names: Sequence[str], d: int):
        super().__init__()
        self.adapter_names = list(adapter_names)
        self.query = nn.Linear(d, d, bias=False)
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d, bias=False)
        nn.init.normal_(self.query.weight, std=0.02)
        nn.init.normal_(self.key.weight, std=0.02)
        with torch.no_grad():
            self.value.weight.fill_(1e-6).fill_diagonal_(1.0)

    def forward(self, h: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # h: (batch, seq, d); a: the adapters' outputs stacked, (batch, seq, N, d)
        scores = (self.key(a) @ self.query(h).unsqueeze(-1)).squeeze(-1)  # (batch, seq, N)
        s = scores.softmax(dim=-1)
        return h + (s.unsqueeze(-2) @ self.value(a)).squeeze(-2), s


class AdapterLayer(nn.Module):
    """A sublayer whose output h becomes h + adapter(h), or the fusion of several adapters."""

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer
        self.adapters = nn.ModuleDict()
        self.fusions = nn.ModuleDict()
        self.active: str | None = None  # an adapter's or a fusion's name; None: the base sublayer
        self.last_fusion_weights: torch.Tensor | None = None  # (batch, seq, N) of the last forward

    def forward(self, *args, **kwargs):
        out = self.base_layer(*args, **kwargs)
        if isinstance(out, tuple):  # attention returns (out, kv): adapt out, pass kv through
            return (self.adapt(out[0]), *out[1:])
        return self.adapt(out)

    def adapt(self, h: torch.Tensor) -> torch.Tensor:
        if self.active in self.adapters:
            return h + self.adapters[self.active](h)
        if self.active in self.fusions:
            fusion = self.fusions[self.active]
            a = torch.stack([self.adapters[n](h) for n in fusion.adapter_names], dim=-2)  # (b, s, N, d)
            out, s = fusion(h, a)
            self.last_fusion_weights = s.detach()
            return out
        return h


def _blocks(model: nn.Module) -> nn.ModuleList:
    if not isinstance(getattr(model, "layers", None), nn.ModuleList):
        raise ValueError("model must be a peftlab Transformer (a model with a `layers` ModuleList of blocks)")
    return model.layers


def _wrappers(model: nn.Module) -> list[AdapterLayer]:
    """Every AdapterLayer in forward order (layer by layer, attention before MLP)."""
    return [m for m in model.modules() if isinstance(m, AdapterLayer)]


def adapter_names(model: nn.Module) -> list[str]:
    """Names of the bottleneck adapters in the model, sorted.

    >>> from peftlab.model import ModelConfig, Transformer
    >>> model = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    >>> adapter_names(add(add(model, 4, name="qa"), 4, name="sql"))
    ['qa', 'sql']
    """
    return sorted({n for w in _wrappers(model) for n in w.adapters})


def fusion_names(model: nn.Module) -> list[str]:
    """Names of the fusion layers in the model, sorted (see `adapter_names`)."""
    return sorted({n for w in _wrappers(model) for n in w.fusions})


def _check_new_name(model: nn.Module, name: str) -> None:
    if not isinstance(name, str) or not name or "." in name or hasattr(nn.ModuleDict(), name):
        raise ValueError(f"name must be a non-empty string without '.' that is not an attribute of "
                         f"nn.ModuleDict (such as 'keys'), got {name!r}")
    if name in adapter_names(model) + fusion_names(model):
        raise ValueError(f"name {name!r} is already in use (adapters: {adapter_names(model)}, "
                         f"fusions: {fusion_names(model)}); pick another or delete(model, {name!r}) first")


def _check_known(model: nn.Module, name: str) -> None:
    known = adapter_names(model) + fusion_names(model)
    if name not in known:
        raise ValueError(f"name must be one of the model's adapters or fusions {known}, got {name!r}")


def add(model: nn.Module, bottleneck: int = 16, name: str = "default", placement: Sequence[str] = ("mlp",),
        nonlinearity: str = "relu") -> nn.Module:
    """Add a bottleneck adapter of size m = `bottleneck` in every layer, make it the active one,
    and freeze everything else (stage 1: train it with `peftlab.train`). Returns `model`
    (changed in place), as `lora.add` does.

    `placement` picks the sublayers it follows: ("mlp",) or ("attn", "mlp") as in Houlsby.
    Adds n_layers * len(placement) * (2*d*m + m + d) parameters.

    >>> from peftlab.model import ModelConfig, Transformer
    >>> from peftlab.measure import count_parameters
    >>> model = Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64))
    >>> model = add(model, bottleneck=4, placement=("attn", "mlp"))
    >>> count_parameters(model).trainable == 2 * 2 * (2 * 32 * 4 + 4 + 32)
    True
    """
    placement = (placement,) if isinstance(placement, str) else tuple(placement)
    positive_int(bottleneck, "bottleneck")  # the bottleneck size m
    if not placement or len(set(placement)) != len(placement) or not set(placement) <= set(PLACEMENTS):
        raise ValueError(f"placement must be a non-empty tuple of distinct values from {tuple(PLACEMENTS)}, "
                         f"got {placement!r}")
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {tuple(NONLINEARITIES)}, got {nonlinearity!r}")
    blocks = _blocks(model)
    _check_new_name(model, name)
    ref = next(model.parameters())
    for block in blocks:
        for attr in (PLACEMENTS[p] for p in placement):
            if not isinstance(getattr(block, attr), AdapterLayer):
                setattr(block, attr, AdapterLayer(getattr(block, attr)))
            adapter = BottleneckAdapter(model.config.d_model, bottleneck, nonlinearity)
            getattr(block, attr).adapters[name] = adapter.to(device=ref.device, dtype=ref.dtype)
    set_active(model, name)
    return model


def set_active(model: nn.Module, name: str) -> None:
    """Route every adapted sublayer through the adapter or fusion `name`; only its parameters
    stay trainable (as PEFT's `set_adapter` does), everything else is frozen.

    >>> from peftlab.model import ModelConfig, Transformer
    >>> model = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    >>> model = add(add(model, 4, name="qa"), 4, name="sql"); set_active(model, "qa")
    >>> model.layers[0].mlp.active
    'qa'
    """
    _check_known(model, name)
    model.requires_grad_(False)
    for w in _wrappers(model):
        owner = w.adapters if name in w.adapters else w.fusions if name in w.fusions else None
        w.active = None if owner is None else name
        if owner is not None:
            owner[name].requires_grad_(True)


@contextmanager
def disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run the base model, every adapter and fusion bypassed, inside the `with` block.

    >>> import torch
    >>> from peftlab.model import ModelConfig, Transformer
    >>> model = add(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)), 4)
    >>> with disabled(model):
    ...     logits = model(torch.zeros(1, 3, dtype=torch.long))
    """
    saved = [(w, w.active) for w in _wrappers(model)]
    for w, _ in saved:
        w.active = None
    try:
        yield model
    finally:
        for w, active in saved:
            w.active = active


def delete(model: nn.Module, name: str) -> None:
    """Remove the adapter or fusion `name`; a sublayer left with no adapter is unwrapped again.
    Deleting the active one leaves the base model running. Trainability is left as it was.

    >>> from peftlab.model import ModelConfig, Transformer
    >>> model = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    >>> model = add(model, 4, name="qa"); delete(model, "qa"); type(model.layers[0].mlp).__name__
    'MLP'
    """
    _check_known(model, name)
    users = sorted({f for w in _wrappers(model) for f, fusion in w.fusions.items() if name in fusion.adapter_names})
    if users:
        raise ValueError(f"adapter {name!r} is used by the fusion(s) {users}; delete those first")
    for block in _blocks(model):
        for attr in PLACEMENTS.values():
            w = getattr(block, attr)
            if not isinstance(w, AdapterLayer):
                continue
            for owner in (w.adapters, w.fusions):
                if name in owner:
                    del owner[name]
            w.active = None if w.active == name else w.active
            if not w.adapters:  # no fusion can be left either: fusions need adapters
                setattr(block, attr, w.base_layer)


def add_fusion(model: nn.Module, names: Sequence[str], name: str = "fusion") -> None:
    """Stage 2: add an AdapterFusion layer over the adapters `names` wherever they sit, make it
    active and freeze everything else, the adapters included. Adds 3*d^2 parameters per layer.

    >>> from peftlab.model import ModelConfig, Transformer
    >>> model = Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64))
    >>> model = add(add(model, 4, name="qa"), 4, name="sql"); add_fusion(model, ["qa", "sql"])
    >>> sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * 3 * 32 ** 2
    True
    """
    known = adapter_names(model)
    if isinstance(names, str) or len(names) < 2 or len(set(names)) != len(names) or not set(names) <= set(known):
        raise ValueError(f"names must be a list of at least two distinct adapters from {known}, got {names!r}")
    wrappers = _wrappers(model)
    sites = {n: [i for i, w in enumerate(wrappers) if n in w.adapters] for n in names}
    if len({tuple(s) for s in sites.values()}) != 1:
        raise ValueError(f"the adapters {list(names)} must share one placement to be fused")
    _check_new_name(model, name)
    ref = next(model.parameters())
    for i in sites[names[0]]:
        fusion = Fusion(names, model.config.d_model)
        wrappers[i].fusions[name] = fusion.to(device=ref.device, dtype=ref.dtype)
    set_active(model, name)


def gather(models: Mapping[str, nn.Module]) -> nn.Module:
    """One model holding each model's active adapter under its key, for `add_fusion`: adapters trained
    apart (stage 1), each in its own copy of the same base. A deep copy of the first model; the others'
    adapters are copied in, so no input is changed. Every adapter must sit at the same places.

    >>> from peftlab import methods
    >>> from peftlab.model import ModelConfig, Transformer
    >>> base = Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64))
    >>> both = gather({"qa": methods.prepare(base, "adapters", bottleneck=4),
    ...                "sql": methods.prepare(base, "adapters", bottleneck=4)})
    >>> adapter_names(both)
    ['qa', 'sql']
    """
    if not isinstance(models, Mapping) or len(models) < 2:
        raise ValueError(f"models must map at least two names to models with an active adapter, got {models!r}")
    wrappers, places = {}, set()
    for name, m in models.items():
        _check_new_name(nn.Module(), name)  # a valid adapter name
        sites = _wrappers(m) if isinstance(m, nn.Module) else []
        if not sites or any(w.active not in w.adapters for w in sites):
            raise ValueError(f"models[{name!r}] must be a model whose every adapted sublayer has an active "
                             f"adapter (from `add` or methods.prepare(base, 'adapters')), got {type(m).__name__}")
        wrappers[name] = sites
        places.add(tuple(n for n, module in m.named_modules() if isinstance(module, AdapterLayer)))
    if len(places) != 1:
        raise ValueError(f"the adapters of {list(models)} must sit at the same places to be gathered")
    first = next(iter(models))
    model = copy.deepcopy(models[first])
    for w, *sources in zip(_wrappers(model), *wrappers.values()):
        w.adapters = nn.ModuleDict({name: copy.deepcopy(src.adapters[src.active])
                                    for name, src in zip(models, sources)})
        w.fusions = nn.ModuleDict()
    set_active(model, first)
    return model


@torch.no_grad()
def fusion_weights(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The active fusion's attention weights for input `ids` (batch, seq), recorded during one
    forward: shape (n_fusion_layers, batch, seq, n_adapters), each row summing to 1. There is one
    fusion layer per layer and placement (n_layers for placement ("mlp",)), in forward order.

    >>> import torch
    >>> from peftlab.model import ModelConfig, Transformer
    >>> model = Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64))
    >>> model = add(add(model, 4, name="qa"), 4, name="sql"); add_fusion(model, ["qa", "sql"])
    >>> fusion_weights(model, torch.zeros(3, 5, dtype=torch.long)).shape
    torch.Size([2, 3, 5, 2])
    """
    layers = [w for w in _wrappers(model) if w.active in w.fusions]
    if not layers:
        raise ValueError("no fusion is active: call add_fusion(...) or set_active(model, <fusion name>) first")
    for w in layers:
        w.last_fusion_weights = None
    model(ids)
    return torch.stack([w.last_fusion_weights for w in layers])


# --- save and load ---------------------------------------------------------------------------------

def _sites(model: nn.Module, name: str) -> dict[str, nn.Module]:
    """'layers.<i>.<sublayer>' -> the adapter or fusion `name` there, in forward order."""
    out = {}
    for i, block in enumerate(_blocks(model)):
        for attr in PLACEMENTS.values():
            w = getattr(block, attr)
            if isinstance(w, AdapterLayer):
                owner = w.adapters if name in w.adapters else w.fusions if name in w.fusions else None
                if owner is not None:
                    out[f"layers.{i}.{attr}"] = owner[name]
    return out


def save(model: nn.Module, path: str | Path, name: str = "default") -> Path:
    """Write the adapter or fusion `name` (its weights in every sublayer, its settings) to directory
    `path` as one save (`files.write_together`, checked by `load`); the base model is not saved. A fusion
    is saved without the adapters it fuses: save those too, and load them first.

    >>> import tempfile
    >>> from peftlab.model import ModelConfig, Transformer
    >>> model = add(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)), 4)
    >>> sorted(p.name for p in save(model, tempfile.mkdtemp()).iterdir())
    ['bottleneck.safetensors', 'bottleneck_config.json', 'peftlab_manifest.json']
    """
    _check_known(model, name)
    sites = _sites(model, name)
    first = next(iter(sites.values()))
    kind = "fusion" if isinstance(first, Fusion) else "adapter"
    placement = [p for p, attr in PLACEMENTS.items() if any(s.endswith(f".{attr}") for s in sites)]
    if kind == "adapter":
        act = next(k for k, cls in NONLINEARITIES.items() if isinstance(first.act, cls))
        settings = {"bottleneck": first.down.out_features, "placement": placement, "nonlinearity": act}
    else:
        settings = {"adapter_names": first.adapter_names, "placement": placement}
    cfg = model.config
    config = {"format": f"peftlab-{kind}", "settings": settings,
              "base": {"d_model": cfg.d_model, "n_layers": cfg.n_layers}, "sites": list(sites)}
    tensors = {f"{site}.{k}": v.detach().cpu().contiguous() for site, m in sites.items() for k, v in m.state_dict().items()}
    config_file, weights_file = FILES[kind]
    return write_together(path, {weights_file: tensors_to_bytes(tensors), config_file: json.dumps(config, indent=2).encode()})


def load(model: nn.Module, path: str | Path, name: str = "default") -> nn.Module:
    """Add the adapter or fusion saved in `path` (by `save`) as `name`, make it active, and freeze the
    rest, as `add` and `add_fusion` do; a fusion needs the adapters it fuses loaded first. Everything is
    checked before the model changes: the files and their manifest, the base model's shape, every
    tensor's name and shape. Returns `model`.

    >>> import tempfile
    >>> from peftlab.model import ModelConfig, Transformer
    >>> cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)
    >>> path = save(add(Transformer(cfg), 4, name="qa"), tempfile.mkdtemp(), name="qa")
    >>> adapter_names(load(Transformer(cfg), path, name="qa"))
    ['qa']
    """
    _blocks(model)
    _check_new_name(model, name)
    path = Path(path)
    found = [k for k, (config_file, _) in FILES.items() if (path / config_file).is_file()]
    if len(found) != 1 or not (path / FILES[found[0]][1]).is_file():
        raise FileNotFoundError(f"{path} must hold one saved adapter ({' + '.join(FILES['adapter'])}) or one "
                                f"fusion ({' + '.join(FILES['fusion'])}); found {found or 'neither'}")
    kind = found[0]
    config_file, weights_file = FILES[kind]
    check_together(path, (config_file, weights_file))
    try:
        config = json.loads((path / config_file).read_text())
        tensors = load_file(path / weights_file)
        settings, base, sites = config["settings"], config["base"], config["sites"]
    except Exception as e:  # JSON and safetensors raise their own types on a corrupt file
        raise ValueError(f"{path} holds a corrupt {kind} file: {type(e).__name__}: {e}") from e
    if config.get("format") != f"peftlab-{kind}":
        raise ValueError(f"{path / config_file}: format is {config.get('format')!r}, expected 'peftlab-{kind}'")
    ours = {"d_model": model.config.d_model, "n_layers": model.config.n_layers}
    if base != ours:
        raise ValueError(f"{path} was trained on a model with {base}; this model has {ours}")
    d = model.config.d_model
    try:
        placement = tuple(settings["placement"])
        if kind == "adapter":
            make = lambda: BottleneckAdapter(d, settings["bottleneck"], settings["nonlinearity"])  # noqa: E731
        else:
            missing = [n for n in settings["adapter_names"] if n not in adapter_names(model)]
            if missing:
                raise ValueError(f"this fusion fuses the adapters {settings['adapter_names']}: load {missing} first")
            make = lambda: Fusion(settings["adapter_names"], d)  # noqa: E731
        want_sites = [f"layers.{i}.{PLACEMENTS[p]}" for i in range(model.config.n_layers) for p in placement]
        want = {f"{site}.{k}": tuple(v.shape) for site in want_sites for k, v in make().state_dict().items()}
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path / config_file} holds settings {settings} that {kind}s do not take: {e}") from e
    have = {k: tuple(v.shape) for k, v in tensors.items()}
    if sites != want_sites or want != have:
        raise ValueError(f"{path / weights_file} does not match its settings {settings}: expected tensors "
                         f"{sorted(set(want.items()) ^ set(have.items()))[:4]} to agree")
    if kind == "adapter":
        add(model, settings["bottleneck"], name, placement, settings["nonlinearity"])
    else:
        add_fusion(model, settings["adapter_names"], name)
    with torch.no_grad():
        for site, m in _sites(model, name).items():
            m.load_state_dict({k[len(site) + 1:]: v for k, v in tensors.items() if k.startswith(site + ".")})
    return model
