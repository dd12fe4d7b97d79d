"""GQA as multiple choice (DualFocus's llava_gqa_testdev_balanced_mcq.jsonl); score with convert_gqa_for_eval.

    python -m dualfocus.eval.model_vqa_gqa --model-path CKPT --question-file Q --answers-file A [...]

Flags as LLaVA's; see `dualfocus.eval.runner.run_eval` (the help text) for sharding, resume and errors.
"""

import sys

from dualfocus.eval.cli import main

if __name__ == "__main__":
    main("gqa", sys.argv[1:])
