"""MMBench: a TSV with base64 images (LLaVA's flags --all-rounds, --single-pred-prompt, --lang); score with convert_mmbench_for_submission.

    python -m dualfocus.eval.model_vqa_mmbench --model-path CKPT --question-file Q --answers-file A [...]

Flags as LLaVA's; see `dualfocus.eval.runner.run_eval` (the help text) for sharding, resume and errors.
"""

import sys

from dualfocus.eval.cli import main

if __name__ == "__main__":
    main("mmbench", sys.argv[1:])
