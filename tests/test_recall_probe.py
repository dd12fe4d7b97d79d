"""scripts/zoom/recall_probe.py lays its sequences out as docs/zoom.md says: the options' letters before
their glyphs, digits split as "▁", digit with --split, and the label the letter of the glyph asked;
with --forward, a share of the rows asks a letter and labels its glyph."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from script_module import load_script

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "zoom" / "recall_probe.py"


@pytest.fixture(scope="module")
def probe():
    return load_script(SCRIPT)


def test_sequence_puts_each_letter_before_its_glyph_and_labels_the_asked_one(probe):
    tokens, labels = probe.sequence([12, 21, 15, 10], [2], prefix=2, split=True)
    nl, dot, sp, sep = probe.NEWLINE, probe.DOT, probe.SPACE, probe.SEP
    assert tokens == [30, 31, nl, 0, dot, sp, 12, nl, 1, dot, 21, nl, 2, dot, sp, 15, nl, 3, dot, sp, 10,
                      sep, sp, 15, sep]
    assert [(i, y) for i, y in enumerate(labels) if y != -100] == [(24, 2)]  # the last SEP predicts "C"


def test_every_label_is_the_letter_of_the_option_showing_the_glyph_asked(probe):
    args = argparse.Namespace(queries=3, prefix=0, split=True)
    tokens, labels = probe.batch(40, torch.Generator().manual_seed(0), args)
    checked = 0
    for row, ys in zip(tokens.tolist(), labels.tolist()):
        dots = [i for i, t in enumerate(row) if t == probe.DOT]  # "C" "." ["▁"] glyph
        options = {row[i + 2] if row[i + 1] == probe.SPACE else row[i + 1]: row[i - 1] for i in dots}
        assert sorted(options.values()) == [0, 1, 2, 3]
        for pos, y in enumerate(ys):
            if y != -100:
                assert options[row[pos - 1]] == y  # the glyph just before the closing SEP
                checked += 1
    assert checked == 40 * 3


def test_forward_rows_ask_a_letter_and_label_its_glyph(probe):
    tokens, labels = probe.sequence([12, 21, 15, 10], [1], prefix=0, split=True, forward=True)
    assert tokens[-3:] == [probe.ASK, 1, probe.ASK] and [y for y in labels if y != -100] == [21]  # "B" -> its glyph
    args = argparse.Namespace(queries=1, prefix=0, split=False)
    _, ys = probe.batch(200, torch.Generator().manual_seed(0), args, forward=0.5)
    answers = ys[ys != -100]
    forward = int((answers >= probe.FIRST_GLYPH).sum())  # a glyph answered, not a letter
    assert 70 <= forward <= 130 and int((answers < len(probe.LETTERS)).sum()) == 200 - forward
