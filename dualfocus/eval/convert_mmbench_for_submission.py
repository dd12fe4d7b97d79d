"""LLaVA's MMBench submission writer (xlsx) with local vanilla / circular scores; the code is
`dualfocus.benchmarks.mmbench`.

    python -m dualfocus.eval.convert_mmbench_for_submission --annotation-file mmbench_dev_20230712.tsv \
        --result-dir answers/<ckpt> --upload-dir answers_upload/<ckpt> --experiment merge \
        [--output-json scores.json]
"""

import sys

from dualfocus.benchmarks.mmbench import load_predictions, main, score, submission_frame

__all__ = ["load_predictions", "main", "score", "submission_frame"]

if __name__ == "__main__":
    main(sys.argv[1:])
