"""Run a slow toy job in a subprocess so a test can `kill -9` it mid-way."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from jobs_toy import ToyEncoder  # noqa: E402

from trimodal.corpora.image import ImageCorpusOptions, open_image_corpus  # noqa: E402
from trimodal.jobs.runner import JobConfig, run_job  # noqa: E402

corpus_dir, out = sys.argv[1], sys.argv[2]
corpus = open_image_corpus(corpus_dir, "folder", ImageCorpusOptions(name="c", unit_size=4))
run_job(corpus, ToyEncoder(sleep_per_batch=0.15),
        JobConfig(out=out, batch_size=2, workers=0, progress=False))
