"""Arguments as SageMaker passes them, the SM_* directories, and the launcher plans (pure)."""

from __future__ import annotations

import pytest

from imgclf import config, launch


def test_sagemaker_style_and_json_quoted_hyperparameters() -> None:
    cfg = config.parse_config(["--lr", "0.0033", "--batch-size", '"64"', "--epochs", "5",
                               "--backbone", '"efficientnet_lite0"', "--feature-cache", "True",
                               "--freeze-backbone", "true", "--export", "false",
                               "--_tuning_objective_metric", "average test loss"], env={})
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.backbone) == (0.0033, 64, 5, "efficientnet_lite0")
    assert cfg.feature_cache and cfg.freeze_backbone and not cfg.export
    assert cfg.unknown_args == ("--_tuning_objective_metric", "average test loss")


def test_flags_without_values_and_negations() -> None:
    cfg = config.parse_config(["--feature-cache", "--no-export"], env={})
    assert cfg.feature_cache and not cfg.export


@pytest.mark.parametrize("argv", [["--batch-size", "0"], ["--lr", "-1"], ["--precision", "fp16"],
                                  ["--feature-cache", "--freeze-backbone", "false"], ["--export", "maybe"]])
def test_bad_arguments_exit_with_usage(argv) -> None:
    with pytest.raises(SystemExit):
        config.parse_config(argv, env={})


def test_directories_from_the_sagemaker_environment(tmp_path) -> None:
    env = {"SM_MODEL_DIR": str(tmp_path / "opt/ml/model"), "SM_OUTPUT_DATA_DIR": str(tmp_path / "opt/ml/output/data")}
    cfg = config.parse_config([], env=env)
    assert cfg.model_dir == tmp_path / "opt/ml/model"
    assert cfg.output_data_dir == tmp_path / "opt/ml/output/data"
    assert cfg.checkpoint_dir == tmp_path / "opt/ml/checkpoints"  # /opt/ml/checkpoints on SageMaker
    assert cfg.feature_cache_dir == tmp_path / "opt/ml/checkpoints/feature-cache"
    override = config.parse_config(["--model-dir", str(tmp_path / "m"), "--checkpoint-dir", str(tmp_path / "c")],
                                   env=env)
    assert override.model_dir == tmp_path / "m" and override.checkpoint_dir == tmp_path / "c"
    assert config.parse_config([], env={}).checkpoint_dir is None


def test_job_identity_and_tensorboard_dir_from_the_sagemaker_environment(tmp_path) -> None:
    env = {"SM_MODEL_DIR": str(tmp_path / "opt/ml/model"), "SM_OUTPUT_DIR": str(tmp_path / "opt/ml/output"),
           "SM_OUTPUT_DATA_DIR": str(tmp_path / "opt/ml/output/data"), "TRAINING_JOB_NAME": "imgclf-r1-003-9f8e7d6c"}
    cfg = config.parse_config([], env=env)
    assert cfg.job_name == "imgclf-r1-003-9f8e7d6c" and cfg.tensorboard_run == "imgclf-r1-003-9f8e7d6c"
    assert cfg.tensorboard_dir == tmp_path / "opt/ml/output/tensorboard"  # TensorBoardOutputConfig.LocalPath
    local = config.parse_config(["--output-data-dir", str(tmp_path / "out")], env={})
    assert (local.job_name, local.tensorboard_run) == (None, "train")
    assert local.tensorboard_dir == tmp_path / "out" / "tensorboard"
    assert config.parse_config(["--tensorboard-dir", str(tmp_path / "tb")], env=env).tensorboard_dir == tmp_path / "tb"
    with pytest.raises(SystemExit):  # it becomes a folder name: only SageMaker's job-name characters
        config.parse_config([], env={**env, "TRAINING_JOB_NAME": "../other-job"})


def test_launch_plans() -> None:
    assert launch.plan_from_env({}).world_size == 1
    hosts = '["algo-2", "algo-1"]'
    plan = launch.plan_from_env({"SM_HOSTS": hosts, "SM_CURRENT_HOST": "algo-2"})
    assert (plan.rank, plan.world_size, plan.master_addr, plan.master_port, plan.source) == (
        1, 2, "algo-1", 29500, "sagemaker")
    local = launch.plan_from_env({"SM_HOSTS": hosts, "SM_CURRENT_HOST": "algo-1",
                                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1234"})
    assert (local.rank, local.master_addr, local.master_port) == (0, "127.0.0.1", 1234)
    single_host = launch.plan_from_env({"SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-1"})
    assert single_host.world_size == 1
    torchrun = launch.plan_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                                          "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.1"})
    assert (torchrun.rank, torchrun.world_size, torchrun.local_rank, torchrun.source) == (3, 4, 1, "torchrun")
    with pytest.raises(ValueError, match="not in SM_HOSTS"):
        launch.plan_from_env({"SM_HOSTS": hosts, "SM_CURRENT_HOST": "algo-9"})
