"""LLaVA's SEED-Bench scorer and upload writer; the code is `dualfocus.benchmarks.seed`.

    python -m dualfocus.eval.convert_seed_for_submission --annotation-file SEED-Bench.json \
        --result-file answers/merge.jsonl --result-upload-file upload/exp.jsonl [--output-json s.json]
"""

import sys

from dualfocus.benchmarks.seed import main

__all__ = ["main"]

if __name__ == "__main__":
    main(sys.argv[1:])
