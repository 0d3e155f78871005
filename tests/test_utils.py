"""Registry, meters, timer, comm (with and without a process group), file helpers."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from maskrcnn_benchmark.utils import comm
from maskrcnn_benchmark.utils.collect_env import collect_env_info
from maskrcnn_benchmark.utils.env import setup_custom_environment
from maskrcnn_benchmark.utils.imports import import_file
from maskrcnn_benchmark.utils.logger import setup_logger
from maskrcnn_benchmark.utils.metric_logger import MetricLogger, SmoothedValue
from maskrcnn_benchmark.utils.miscellaneous import atomic_write_text
from maskrcnn_benchmark.utils.registry import Registry
from maskrcnn_benchmark.utils.timer import Timer, get_time_str


def test_registry_decorator_and_call_forms():
    registry = Registry("HEADS")

    @registry.register("a")
    def make_a():
        return "a"

    registry.register("b", len)
    assert registry["a"] is make_a and registry["b"] is len


def test_registry_rejects_duplicates_and_names_known_entries():
    registry = Registry("HEADS")
    registry.register("known", len)
    with pytest.raises(KeyError, match="already registered"):
        registry.register("known", str)
    with pytest.raises(KeyError, match="HEADS: no entry named 'missing'. Registered: known"):
        registry["missing"]


def test_smoothed_value_upstream_case():
    # upstream tests/test_metric_logger.py
    meter = SmoothedValue()
    for i in range(10):
        meter.update(i)
    assert meter.count == 10
    assert meter.total == 45
    assert meter.median == 4
    assert meter.avg == 4.5


def test_smoothed_value_window():
    meter = SmoothedValue(window_size=3)
    for value in [10.0, 1.0, 2.0, 3.0]:
        meter.update(value)
    assert meter.avg == pytest.approx(2.0)
    assert meter.global_avg == pytest.approx(4.0)


def test_metric_logger_meters_and_errors():
    logger = MetricLogger(delimiter="  ")
    logger.update(loss=torch.tensor(2.0), lr=0.5)
    logger.update(loss=4.0, lr=0.5)
    assert logger.loss.global_avg == pytest.approx(3.0)
    assert str(logger).startswith("loss: ")
    with pytest.raises(AttributeError):
        logger.not_a_meter
    with pytest.raises(TypeError, match="'loss' must be a number"):
        logger.update(loss="high")


def test_timer_and_time_string():
    timer = Timer()
    timer.add(1.5)
    timer.add(2.5)
    assert timer.average_time == pytest.approx(2.0)
    assert get_time_str(3725.9) == "1:02:05"


def test_comm_without_process_group():
    assert comm.get_world_size() == 1 and comm.get_rank() == 0 and comm.is_main_process()
    comm.synchronize()
    assert comm.all_gather({"x": 1}) == [{"x": 1}]
    assert comm.gather(3) == [3]
    losses = {"a": torch.tensor(1.0)}
    assert comm.reduce_dict(losses) is losses


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank, world_size, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        gathered_all = comm.all_gather({"rank": rank})
        gathered_root = comm.gather([rank] * (rank + 1))
        reduced = comm.reduce_dict({"b": torch.tensor(float(rank)), "a": torch.tensor(10.0 * rank)})
        comm.synchronize()
        if rank == 0:
            result = {
                "all": gathered_all,
                "root": gathered_root,
                "reduced": {k: v.item() for k, v in reduced.items()},
                "world": comm.get_world_size(),
            }
            torch.save(result, os.path.join(out_dir, "result.pt"))
        else:
            assert gathered_root is None
    finally:
        dist.destroy_process_group()


def test_comm_with_gloo_process_group(tmp_path):
    mp.spawn(_distributed_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    result = torch.load(tmp_path / "result.pt", weights_only=False)
    assert result["world"] == 2
    assert result["all"] == [{"rank": 0}, {"rank": 1}]
    assert result["root"] == [[0], [1, 1]]
    assert result["reduced"] == {"a": pytest.approx(5.0), "b": pytest.approx(0.5)}


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "config.yml"
    atomic_write_text(str(path), "a: 1\n")
    atomic_write_text(str(path), "a: 2\n")
    assert path.read_text() == "a: 2\n"
    assert [p.name for p in path.parent.iterdir()] == ["config.yml"]


def test_import_file_and_custom_environment(tmp_path, monkeypatch):
    module_path = tmp_path / "custom_env.py"
    module_path.write_text("import os\ndef setup_environment():\n    os.environ['LST_TEST_HOOK'] = 'ran'\n")
    monkeypatch.delenv("LST_TEST_HOOK", raising=False)
    assert callable(import_file("custom_env_under_test", str(module_path)).setup_environment)
    setup_custom_environment(str(module_path))
    assert os.environ["LST_TEST_HOOK"] == "ran"
    with pytest.raises(FileNotFoundError, match="TORCH_DETECTRON_ENV_MODULE"):
        setup_custom_environment(str(tmp_path / "missing.py"))


def test_setup_logger_writes_on_main_process_only(tmp_path):
    main_logger = setup_logger("lst.test.main", str(tmp_path / "main"), distributed_rank=0)
    main_logger.info("hello from rank 0")
    other_logger = setup_logger("lst.test.other", str(tmp_path / "other"), distributed_rank=1)
    other_logger.info("hello from rank 1")
    for handler in main_logger.handlers:
        handler.flush()
    assert "hello from rank 0" in (tmp_path / "main" / "log.txt").read_text()
    assert not (tmp_path / "other").exists()


def test_collect_env_info_reports_torch_and_extension():
    info = collect_env_info()
    assert f"PyTorch version: {torch.__version__}" in info
    assert "maskrcnn_benchmark._C: built" in info
