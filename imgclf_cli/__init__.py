"""`imgclf`: the project's command for people, on AWS and on one machine.

    imgclf aws upload DIR --stack NAME    check a dataset locally, upload it (resumable), manifest last
    imgclf aws watch [--stack NAME] [EXECUTION]   follow a pipeline run live until it ends
    imgclf predict IMAGE... [--url URL | --stack NAME | --local]   top-k classes as a table or JSON
    imgclf local ...                      local mode (`python -m localmode ...`) under the same roof

Exit codes are in imgclf_cli.errors.ExitCode and in `imgclf --help`.
"""
