"""CLIP pixels as transformers 4.31.0's ``CLIPImageProcessor`` made them, whatever else is installed.

transformers 5's ``CLIPImageProcessor`` is a torchvision backend whenever torchvision is installed
(most GPU machines), and its pixel values differ from 4.31's by up to 0.03 after normalisation;
without torchvision it falls back to the PIL backend and prints advice to install torchvision.
The PIL backend (``CLIPImageProcessorPil``) equals 4.31's processor bit for bit
(``tests/test_fidelity.py`` runs 4.31's), so it is the only one built here, from the checkpoint's
``preprocessor_config.json`` read as data.
"""

from __future__ import annotations

from pathlib import Path

from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from dualfocus.model.checkpoint_io import CheckpointError, read_json_object

PREPROCESSOR_CONFIG = "preprocessor_config.json"
# The settings a CLIP preprocessor_config.json holds (4.31 and 5 write the same names).
_KEYS = ("crop_size", "do_center_crop", "do_convert_rgb", "do_normalize", "do_rescale", "do_resize",
         "image_mean", "image_std", "resample", "rescale_factor", "size")


class PreprocessorConfigError(CheckpointError):
    """A vision tower's preprocessor_config.json is missing or unreadable; names the file."""


def clip_image_processor(**settings) -> CLIPImageProcessorPil:
    """The PIL-backed CLIP processor with ``settings`` (the keys of preprocessor_config.json)."""
    return CLIPImageProcessorPil(**{k: v for k, v in settings.items() if k in _KEYS})


def load_clip_processor(directory) -> CLIPImageProcessorPil:
    """The PIL-backed CLIP processor described by ``directory/preprocessor_config.json``."""
    path = Path(directory) / PREPROCESSOR_CONFIG
    if not path.is_file():
        raise PreprocessorConfigError(f"{path}: missing (a CLIP vision tower or LLaVA checkpoint ships it)")
    return clip_image_processor(**read_json_object(path, PreprocessorConfigError))
