"""The inference Lambda's own modules, beside its handler (functions/inference/app.py):

- `request`: pure request and answer handling (validation, the endpoint's answer, the HTTP response);
- `endpoint`: the sagemaker-runtime client, the InvokeEndpoint call and its error mapping;
- `prediction_metrics`: the CloudWatch metrics of each prediction, as EMF log lines.

A package in the function's code folder, so `sam build` ships it with app.py and the Lambda runtime
(which puts that folder on sys.path) imports it as `imgclf_lambda`; pyproject.toml maps the same folder
as the installed package of that name, so tests, local mode and benchmarks import it the same way.
"""
