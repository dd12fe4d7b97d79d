"""TextVQA: LLaVA's llava_textvqa_val_v051_ocr.jsonl; score with eval_textvqa.

    python -m dualfocus.eval.model_vqa_textvqa --model-path CKPT --question-file Q --answers-file A [...]

Flags as LLaVA's; see `dualfocus.eval.runner.run_eval` (the help text) for sharding, resume and errors.
"""

import sys

from dualfocus.eval.cli import main

if __name__ == "__main__":
    main("textvqa", sys.argv[1:])
