"""Token ids and strings shared with the original LLaVA release (and its checkpoints)."""

IGNORE_INDEX = -100  # label value ignored by the loss
IMAGE_TOKEN_INDEX = -200  # placeholder id that the model replaces with image features
DEFAULT_IMAGE_TOKEN = "<image>"
DEFAULT_IMAGE_PATCH_TOKEN = "<im_patch>"
DEFAULT_IM_START_TOKEN = "<im_start>"
DEFAULT_IM_END_TOKEN = "<im_end>"
