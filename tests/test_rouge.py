import pytest

from peftlab.rouge import lcs_length, max_rouge_l, rouge_l, tokenize


def test_tokenize_lowercases_and_splits_on_non_alphanumerics():
    assert tokenize("Sort the words: B, a!") == ["sort", "the", "words", "b", "a"]
    assert tokenize("  ...  ") == []


def test_lin_2004_example_s2():
    # Lin 2004, section 3.1: reference "police killed the gunman".
    # LCS table c[i][j] (rows: reference, columns: candidate "police kill the gunman"):
    #              police kill the gunman
    #   police        1     1    1    1
    #   killed        1     1    1    1
    #   the           1     1    2    2
    #   gunman        1     1    2    3
    # LCS = 3, R = 3/4, P = 3/4, F = 0.75
    assert lcs_length(tokenize("police killed the gunman"), tokenize("police kill the gunman")) == 3
    assert rouge_l("police killed the gunman", "police kill the gunman") == pytest.approx(0.75)


def test_lin_2004_example_s3():
    # candidate "the gunman kill police":
    #              the gunman kill police
    #   police      0    0      0    1
    #   killed      0    0      0    1
    #   the         1    1      1    1
    #   gunman      1    2      2    2
    # LCS = 2 ("the gunman"), R = P = 2/4, F = 0.5
    assert rouge_l("police killed the gunman", "the gunman kill police") == pytest.approx(0.5)


def test_unequal_lengths():
    # reference "the cat sat on the mat" (6), candidate "the cat on the mat" (5):
    #            the cat on the mat
    #   the       1   1   1  1   1
    #   cat       1   2   2  2   2
    #   sat       1   2   2  2   2
    #   on        1   2   3  3   3
    #   the       1   2   3  4   4
    #   mat       1   2   3  4   5
    # LCS = 5, R = 5/6, P = 5/5, F = 2 * (5/6) * 1 / (5/6 + 1) = 10/11
    assert rouge_l("the cat sat on the mat", "the cat on the mat") == pytest.approx(10 / 11)


def test_order_matters_not_only_overlap():
    # same four words, LCS 2 ("a c", "b d", ...): F = 0.5, where unigram overlap would say 1.0
    assert rouge_l("a b c d", "b d a c") == pytest.approx(0.5)


def test_edge_cases_and_symmetry():
    assert rouge_l("same words here", "Same words, here.") == 1.0
    assert rouge_l("apple", "river") == 0.0
    assert rouge_l("", "river") == 0.0 and rouge_l("river", "!!") == 0.0
    a, b = "Write the word in reverse.", "Reverse the letters of the word."
    assert rouge_l(a, b) == pytest.approx(rouge_l(b, a))
    assert max_rouge_l("x", []) == 0.0
    assert max_rouge_l("sort the words", ["count the letters", "sort the words"]) == 1.0
