"""TextVQA / VQA answer normalization and the 10-annotator soft accuracy.

Behaviour is that of the evaluator LLaVA-1.5 and DualFocus report TextVQA with (LLaVA's
`llava/eval/m4c_evaluator.py`, taken from MMF's EvalAI answer processor), quirks included, because
the published numbers were computed with them. Each quirk is marked QUIRK below; do not "fix" one
without also changing every number you compare against.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# The standard VQA contraction table. QUIRK: a few keys keep capitals ("Im", "Ive", "Id've",
# "I'dve") and can never match, because answers are lower-cased before lookup; and
# "somebody'd" maps *backwards* to "somebodyd". Both as in the official table.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}

NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})

# QUIRK (look-behind typo): meant as (?<!\d) "not after a digit", written (?!<=\d), a look-*ahead*
# for the text "<=digit" that can never match in front of a '.'. So every '.' not followed by a
# digit is dropped, also after a digit: "route 66." -> "route 66", while "3.5" keeps its point.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
# QUIRK (dead test): a comma between digits switches punctuation to "delete" instead of "space"
# below, but word_tokenize has already deleted every comma, so this never matches in practice.
COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")
PUNCTUATIONS = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
                "@", "`", ",", "?", "!")
# QUIRK (flag as count): the original calls PERIOD_STRIP.sub("", text, re.UNICODE), which passes
# re.UNICODE (== 32) as the *count* argument: at most 32 periods are removed per answer.
PERIOD_STRIP_COUNT = int(re.UNICODE)


def word_tokenize(text: str) -> str:
    """Lower-case, delete ',' and '?', split the possessive "'s" off its word."""
    text = text.lower()
    text = text.replace(",", "").replace("?", "").replace("'s", " 's")
    return text.strip()


def process_punctuation(text: str) -> str:
    """Punctuation next to a space (anywhere in the answer) is deleted, otherwise it becomes a space;
    then periods not followed by a digit are deleted (see the QUIRKs above)."""
    out = text
    for p in PUNCTUATIONS:
        # QUIRK: the test looks at the *input* answer for every mark, not at `out` as edited so far.
        if (p + " " in text or " " + p in text) or COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, count=PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """Number words -> digits, drop articles, restore contractions ("dont" -> "don't")."""
    # (The original uses NUMBER_MAP.setdefault(word, word), which grows the table as a side
    # effect; .get gives the same words.)
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(answer: str) -> str:
    """The EvalAI/m4c answer processor: what both the prediction and each human answer go through."""
    answer = word_tokenize(answer)
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    answer = process_punctuation(answer)
    return process_digit_article(answer)


def answer_scores(gt_answers: Sequence[str]) -> dict[str, float]:
    """Soft score of every distinct normalized human answer.

    For each of the 10 leave-one-annotator-out subsets of 9 answers, an answer scores
    min(1, matches / 3); its score is the mean over the 10 subsets."""
    answers = [normalize_answer(a) for a in gt_answers]
    if len(answers) != 10:
        raise ValueError(f"TextVQA/VQA accuracy needs exactly 10 human answers, got {len(answers)}")
    scores = {}
    for candidate in set(answers):
        matches = sum(a == candidate for a in answers)
        # Leaving out an annotator who gave `candidate` leaves matches - 1 agreeing ones.
        per_subset = [min(1.0, (matches - (a == candidate)) / 3) for a in answers]
        scores[candidate] = sum(per_subset) / len(per_subset)
    return scores


def vqa_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """Accuracy in [0, 1] of one prediction against its 10 human answers."""
    return answer_scores(gt_answers).get(normalize_answer(prediction), 0.0)


def mean_accuracy(pairs: Iterable[tuple[str, Sequence[str]]]) -> float:
    """Mean accuracy in [0, 1] over (prediction, human answers) pairs; 0.0 for none."""
    scores = [vqa_accuracy(pred, gts) for pred, gts in pairs]
    return sum(scores) / len(scores) if scores else 0.0
