"""The stack's Lambda functions, one folder each (the SAM app templates' layout): `functions/<name>/app.py`
holds the handler that template.yaml names (`app.handler`, CodeUri `functions/<name>/`), and imports as
`functions.<name>.app` in tests and local mode. The pipeline's logic is in the layer's `mlpipeline`
package (functions/pipeline_layer), which every pipeline handler imports; the inference function's own
modules are in `functions/inference/imgclf_lambda`.
"""
