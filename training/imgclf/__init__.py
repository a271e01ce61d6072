"""imgclf: the image-classifier library that SageMaker runs (train.py, inference.py) and the rest of the
project imports (local mode, tests, benchmarks; the pipeline Lambdas use only its pure modules)."""
