"""Training data: LLaVA conversation records, DualFocus's `sub_area` crop as the second image.

A record is LLaVA's (``id``, ``image``, ``conversations`` of ``{"from": "human" | "gpt", "value"}``)
and may carry ``sub_area = [x1, y1, x2, y2]``: the region the question is about. Its crop (squared
and padded by 25 px exactly as the inference pipeline crops a predicted box, `dualfocus.boxes`)
becomes the image of the record's second ``<image>``; the full image is the first.

Units of ``sub_area`` (``--sub_area_units``) and the crop: `dualfocus.train.sub_area` (a pixel box
inside the top-left pixel needs ``pixel``).

All records are checked before training (`validate_records`); every bad record is listed with its
index, its id and the reason, and nothing trains until the data is clean.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from PIL import Image
from torch.utils.data import Dataset

from dualfocus import boxes
from dualfocus.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from dualfocus.conversation import Conversation, SeparatorStyle
from dualfocus.files import read_json_lines
from dualfocus.mm_utils import ImageLoadError, load_image, process_images
from dualfocus.preprocess import preprocess
from dualfocus.train.sub_area import CropPolicy, crop_sub_area, normalized_sub_area

log = logging.getLogger(__name__)

SPEAKERS = ("human", "gpt")
MAX_LISTED = 20  # bad records named in one error message
DEFAULT_CROP = CropPolicy()  # the inference crop


class DataError(ValueError):
    """Training records that cannot be used; the message names each one and why."""


def record_name(record, index: int) -> str:
    rid = record.get("id") if isinstance(record, dict) else None
    return f"record {index}" + (f" (id {rid!r})" if rid is not None else "")


# -- files ------------------------------------------------------------------------------------------
def load_records(path: str | os.PathLike) -> list[dict]:
    """A JSON list of records (LLaVA's format), or JSON Lines (one record per line)."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = [value for _, value in read_json_lines(text.splitlines(), lambda n, e: DataError(
            f"{path}: neither a JSON list nor JSON Lines (line {n}: {e})"))]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty list of records")
    return data


def image_path(record: dict, image_folder: str | None) -> str:
    """LLaVA's rule: `image` relative to --image_folder (an absolute `image` stays as it is)."""
    return os.path.join(image_folder, record["image"]) if image_folder else record["image"]


# -- validation -------------------------------------------------------------------------------------
def expected_images(record: dict) -> int:
    """Images a record gives its conversation: the image, plus its crop when it has a sub_area."""
    return (1 if record.get("image") is not None else 0) + (1 if record.get("sub_area") is not None else 0)


def record_problems(record, conv: Conversation | None = None, units: str = "auto") -> list[str]:
    """What is wrong with one record's structure (no files opened)."""
    if not isinstance(record, dict):
        return [f"a record is a JSON object, got {type(record).__name__}"]
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return ["no conversations (a non-empty list of {from, value} turns)"]
    problems, n_tags = [], 0
    for j, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") not in SPEAKERS or not isinstance(turn.get("value"), str):
            problems.append(f"turn {j} must be {{'from': 'human' | 'gpt', 'value': str}}, got {turn!r:.80}")
            continue
        if turn["from"] != SPEAKERS[j % 2]:
            problems.append(f"turn {j} is from {turn['from']!r}: turns alternate human, gpt, starting with human")
        tags = turn["value"].count(DEFAULT_IMAGE_TOKEN)
        if tags > 1:
            problems.append(f"turn {j} holds {tags} {DEFAULT_IMAGE_TOKEN} tags; a turn shows at most one image")
        n_tags += tags
    if record.get("sub_area") is not None and record.get("image") is None:
        problems.append("sub_area without an image")
    if record.get("image") is not None and not isinstance(record.get("image"), str):
        problems.append(f"image must be a path, got {record.get('image')!r:.80}")
    n_images = expected_images(record)
    if n_tags != n_images:
        what = "an image and its sub_area crop" if record.get("sub_area") is not None else (
            "one image" if n_images else "no image")
        problems.append(f"{n_tags} {DEFAULT_IMAGE_TOKEN} tag(s) in the conversation for {n_images} image(s) ({what})")
    if conv is not None and conv.sep_style == SeparatorStyle.PLAIN and (n_images > 1 or len(turns) != 2):
        problems.append(f"template {conv.version!r} (plain) takes one image and one caption: {len(turns)} turns, "
                        f"{n_images} image(s)")
    if record.get("sub_area") is not None:
        try:
            normalized_sub_area(record["sub_area"], None, None, units)
        except boxes.BoxError as e:
            problems.append(f"bad sub_area: {e}")
    return problems


def _image_problems(record: dict, image_folder: str | None, units: str) -> list[str]:
    path = image_path(record, image_folder)
    try:
        with Image.open(path) as im:  # the header only: size without decoding
            width, height = im.size
    except FileNotFoundError:
        return [f"image {path} not found"]
    except (OSError, Image.DecompressionBombError) as e:
        return [f"image {path} cannot be read ({type(e).__name__}: {e})"]
    if record.get("sub_area") is None:
        return []
    try:
        box = normalized_sub_area(record["sub_area"], width, height, units)
        CropPolicy(units).region(box, width, height)
    except boxes.BoxError as e:
        return [f"sub_area {record['sub_area']} does not fit image {path} ({width} x {height}): {e}"]
    return []


def validate_records(
    records: Sequence, image_folder: str | None = None, *, conv: Conversation | None = None,
    units: str = "auto", check_images: bool = True, workers: int = 16,
) -> None:
    """Check every record; raise `DataError` listing the bad ones (index, id, reasons).

    Structure always; with ``check_images`` also that each image opens and each sub_area lies in it.
    """
    bad: list[str] = []
    structural = [record_problems(r, conv, units) for r in records]
    with_images = [i for i, (r, p) in enumerate(zip(records, structural)) if not p and r.get("image") is not None]
    image_checks: dict[int, list[str]] = {}
    if check_images and with_images:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for i, problems in zip(with_images, pool.map(
                    lambda k: _image_problems(records[k], image_folder, units), with_images)):
                image_checks[i] = problems
    for i, record in enumerate(records):
        problems = structural[i] + image_checks.get(i, [])
        if problems:
            bad.append(f"  {record_name(record, i)}: " + "; ".join(problems))
    if bad:
        shown = bad[:MAX_LISTED] + ([f"  ... and {len(bad) - MAX_LISTED} more"] if len(bad) > MAX_LISTED else [])
        raise DataError(f"{len(bad)} of {len(records)} training records are unusable:\n" + "\n".join(shown))


# -- the dataset ------------------------------------------------------------------------------------
def place_image_tags(turns: list[dict], conv: Conversation) -> list[dict]:
    """LLaVA's preprocess_multimodal: a turn's <image> moves to its start, followed by a newline
    (``mmtag`` templates wrap it in <Image></Image>). Returns new turns."""
    out = []
    for turn in turns:
        value = turn["value"]
        if DEFAULT_IMAGE_TOKEN in value:
            value = (DEFAULT_IMAGE_TOKEN + "\n" + value.replace(DEFAULT_IMAGE_TOKEN, "").strip()).strip()
            if "mmtag" in conv.version:
                value = value.replace(DEFAULT_IMAGE_TOKEN, "<Image>" + DEFAULT_IMAGE_TOKEN + "</Image>")
        out.append({"from": turn["from"], "value": value})
    return out


def label_rounds_after_first(labels: torch.Tensor, n_answers: int, name: str) -> torch.Tensor:
    """--round2_only: keep the labels of every assistant turn but the first.

    Each labelled run of tokens is one assistant answer (its stop string included) under the v1,
    llama_2 and mpt templates; anything else cannot be split into rounds and is refused.
    """
    labelled = labels.ne(IGNORE_INDEX).tolist()
    starts = [t for t, on in enumerate(labelled) if on and (t == 0 or not labelled[t - 1])]
    if len(starts) != n_answers:
        raise DataError(f"{name}: --round2_only needs one labelled span per answer, found {len(starts)} spans "
                        f"for {n_answers} answers (use a v1, llama_2 or mpt template)")
    if n_answers < 2:
        return labels
    out = labels.clone()
    out[: starts[1]] = IGNORE_INDEX
    return out


class SupervisedDataset(Dataset):
    """LLaVA's LazySupervisedDataset with DualFocus's sub_area crop.

    Item: ``input_ids`` (T,), ``labels`` (T,), ``images`` (k, 3, H, W) in the order of the
    conversation's <image> tags: the full image, then the crop.
    """

    def __init__(self, records: Sequence[dict], tokenizer, image_processor, conv: Conversation, *,
                 image_folder: str | None = None, image_aspect_ratio: str = "pad",
                 crop_policy: CropPolicy = DEFAULT_CROP, round2_only: bool = False,
                 model_max_length: int | None = None):
        self.records = list(records)
        self.tokenizer, self.image_processor, self.conv = tokenizer, image_processor, conv
        self.image_folder, self.crop_policy, self.round2_only = image_folder, crop_policy, round2_only
        self.image_cfg = SimpleNamespace(image_aspect_ratio=image_aspect_ratio)
        self.model_max_length = model_max_length or tokenizer.model_max_length
        size = image_processor.crop_size
        self.image_shape = (3, size["height"], size["width"])

    def __len__(self) -> int:
        return len(self.records)

    @property
    def lengths(self) -> list[int]:
        """LLaVA's length estimate: words, plus 128 per record with an image."""
        return [sum(len(t["value"].split()) for t in r["conversations"]) + (128 if r.get("image") else 0)
                for r in self.records]

    @property
    def modality_lengths(self) -> list[int]:
        """LLaVA's: word count, negative for text-only records (--group_by_modality_length)."""
        out = []
        for r in self.records:
            n = sum(len(t["value"].split()) for t in r["conversations"])
            out.append(n if r.get("image") else -n)
        return out

    def images_of(self, i: int) -> list[Image.Image]:
        """The PIL images record i shows, in conversation order: [full, crop] / [full] / []."""
        record = self.records[i]
        if record.get("image") is None:
            return []
        name = record_name(record, i)
        try:
            image = load_image(image_path(record, self.image_folder), record_id=record.get("id"))
        except ImageLoadError as e:
            raise DataError(f"{name}: {e}") from e
        if record.get("sub_area") is None:
            return [image]
        try:
            box = normalized_sub_area(record["sub_area"], image.width, image.height, self.crop_policy.units)
            crop, _ = crop_sub_area(image, box, self.crop_policy)
        except boxes.BoxError as e:
            raise DataError(f"{name}: sub_area {record['sub_area']}: {e}") from e
        return [image, crop]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        record = self.records[i]
        name = record_name(record, i)
        images = self.images_of(i)
        turns = place_image_tags(copy.deepcopy(record["conversations"]), self.conv)
        data = preprocess([turns], self.tokenizer, self.conv, has_image=bool(images), record_id=record.get("id", i))
        input_ids, labels = data["input_ids"][0], data["labels"][0]
        if self.round2_only:
            labels = label_rounds_after_first(labels, sum(t["from"] == "gpt" for t in turns), name)
        if input_ids.shape[0] > self.model_max_length:  # LLaVA truncates; keep images and markers in step
            input_ids, labels = input_ids[: self.model_max_length], labels[: self.model_max_length]
            kept = int((input_ids == IMAGE_TOKEN_INDEX).sum())
            if kept < len(images):
                log.warning("%s: truncated to %d tokens, %d of its images dropped", name, self.model_max_length,
                            len(images) - kept)
                images = images[:kept]
        if images:
            pixels = process_images(images, self.image_processor, self.image_cfg)  # (k, 3, H, W)
        else:
            pixels = torch.zeros(0, *self.image_shape)
        return dict(input_ids=input_ids, labels=labels, images=pixels)


@dataclass
class DataCollator:
    """Right-pads a batch; images of all samples concatenated in order (N, 3, H, W), or None."""

    pad_token_id: int
    model_max_length: int

    def __call__(self, instances: Sequence[dict]) -> dict:
        ids = [x["input_ids"][: self.model_max_length] for x in instances]
        labels = [x["labels"][: self.model_max_length] for x in instances]
        input_ids = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=self.pad_token_id)
        label_pad = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=IGNORE_INDEX)
        lengths = torch.tensor([len(x) for x in ids])
        attention_mask = torch.arange(input_ids.shape[1])[None] < lengths[:, None]  # (B, T)
        batch = dict(input_ids=input_ids, labels=label_pad, attention_mask=attention_mask)
        images = [x["images"] for x in instances if x["images"].shape[0]]
        batch["images"] = torch.cat(images) if images else None
        return batch


def make_supervised_data_module(tokenizer, image_processor, conv: Conversation, data_args, model_max_length: int):
    """Load, validate (all records, up front) and wrap the training data for the Trainer."""
    records = load_records(data_args.data_path)
    validate_records(records, data_args.image_folder, conv=conv, units=data_args.sub_area_units,
                     check_images=data_args.check_images)
    policy = CropPolicy(units=data_args.sub_area_units, process=data_args.process_sub_area,
                        pad=data_args.sub_area_pad, draw=data_args.draw_sub_region)
    dataset = SupervisedDataset(records, tokenizer, image_processor, conv, image_folder=data_args.image_folder,
                                image_aspect_ratio=data_args.image_aspect_ratio, crop_policy=policy,
                                round2_only=data_args.round2_only, model_max_length=model_max_length)
    collator = DataCollator(pad_token_id=tokenizer.pad_token_id, model_max_length=model_max_length)
    return dict(train_dataset=dataset, eval_dataset=None, data_collator=collator)
