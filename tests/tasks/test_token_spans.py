"""Token categories and character spans of step-tagged completions."""

import pytest

from pipeline.tasks.token_spans import categorise_tokens, format_tokens, token_char_spans
from tests.conftest import CORRECT_TEXT, WRONG_TEXT, spans_of, step_spans


def test_categories_of_a_trace_wrong_at_step_2_of_3():
    pieces = [
        "<step_1> 2 + 3 = 5 </step_1>",
        "\n",
        "<step_2> 5 * 4",
        " = 21 </step_2>",
        "\n<step_3>",
        " 21 - 1 = 20 </step_3>\n",
        "<answer> 20",
        " </answer>",
        "",  # EOS
    ]
    assert "".join(pieces) == WRONG_TEXT
    categories = categorise_tokens(spans_of(pieces), WRONG_TEXT, step_spans(WRONG_TEXT), 2)
    assert categories == [
        "pre_error",
        "pre_error",
        "first_wrong",
        "first_wrong",
        "after_error",
        "after_error",
        "answer",
        "answer",
        "answer",
    ]
    # a token straddling the wrong step's opening tag belongs to it
    straddling = ["<step_1> 2 + 3 = 5 </step_", "1>\n<st", WRONG_TEXT[len("<step_1> 2 + 3 = 5 </step_1>\n<st") :]]
    assert categorise_tokens(spans_of(straddling), WRONG_TEXT, step_spans(WRONG_TEXT), 2)[:2] == [
        "pre_error",
        "first_wrong",
    ]


def test_categories_of_a_correct_trace_and_edge_cases():
    pieces = ["<step_1> 2 + 3 = 5 </step_1>\n", "<step_2> 5 * 4 = 20 </step_2>\n", "<answer>", " 20 </answer>", ""]
    spans = spans_of(pieces)
    assert categorise_tokens(spans, CORRECT_TEXT, step_spans(CORRECT_TEXT), None) == [
        "pre_error",
        "pre_error",
        "answer",
        "answer",
        "answer",
    ]
    # a wrong step the trace does not have locates nothing
    assert categorise_tokens(spans, CORRECT_TEXT, step_spans(CORRECT_TEXT), 5).count("first_wrong") == 0
    # no answer tag: no answer tokens; the trailing EOS is after the error
    text = "<step_1> 1 + 1 = 3 </step_1>\n<step_2> 3 + 1 = 4"
    cats = categorise_tokens(
        spans_of(["<step_1> 1 + 1 = 3 </step_1>", "\n<step_2> 3 + 1 = 4", ""]), text, step_spans(text), 1
    )
    assert cats == ["first_wrong", "after_error", "after_error"]


def test_char_spans_with_the_tiny_tokenizer(tokenizer):
    text = WRONG_TEXT.replace("21 - 1", "21 - 1 é 中")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    spans = token_char_spans(ids, text, tokenizer)
    assert len(spans) == len(ids)
    assert "".join(text[a:b] for a, b in spans) == text
    assert spans[-1] == (len(text), len(text))  # EOS decodes to nothing
    # "中" takes several byte-level tokens: all but the last get an empty span where it starts
    cjk = text.index("中")
    assert [s for s in spans if s[0] == cjk][-1] == (cjk, cjk + 1) and (cjk, cjk) in spans
    assert all(a <= b for a, b in spans) and all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))


class SentencePieceLike:
    """Decodes a leading space away, as SentencePiece tokenizers do for a sequence's first word."""

    vocab = {0: "a", 1: " b", 2: " c"}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.vocab[i] for i in ids).lstrip(" ")


def test_char_spans_fall_back_to_prefix_decoding_and_name_a_mismatch():
    assert token_char_spans([0, 1, 2], "a b c", SentencePieceLike()) == [(0, 1), (1, 3), (3, 5)]
    with pytest.raises(ValueError, match="do not decode to the completion text.*character 2"):
        token_char_spans([0, 1, 2], "a x c", SentencePieceLike())


def test_format_tokens_are_the_tokens_that_write_a_tag():
    pieces = ["<", "step", "_", "1", ">", " 2 + 3 = 5 ", "</", "step_1", ">\n", "<answer", "> 5", " </answer>"]
    text = "".join(pieces)
    flags = format_tokens(spans_of(pieces), text)
    assert flags == [True] * 5 + [False] + [True] * 6  # "> 5" touches the tag: left out with it
    assert format_tokens(spans_of(["5 + 3", " = 8"]), "5 + 3 = 8") == [False, False]
