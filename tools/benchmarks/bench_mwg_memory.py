"""Peak memory and time per episode of the meta weight generator's episodic training (MWG,
maskrcnn_benchmark/lst/episode.py) against the phase size, as ratios to a reference phase size,
with and without gradient caching (goal: with caching, 960 new classes <= 1.2x the memory of 160).

The episodes are the paper's (MODEL.FEW_SHOT.CLASSES_PER_EPISODE 0, the default): every new
class's row is generated from one support image in every episode, so the support pass grows with
the phase size. Without gradient caching (MODEL.FEW_SHOT.GRADIENT_CACHE False) the support graphs
of all classes live until the query's backward; with it (the default) one chunk's graph at a time.

The data set is LVIS-shaped: the images and boxes of datasets/synthetic_lt/train.json, their
annotations relabelled (seeded) into ``--base`` base classes that take the frequent head and 960
new classes with long-tailed instance counts (``NEW_HEAD_INSTANCES`` * rank^-``NEW_TAIL_EXPONENT``,
at least 1, so every new class has an image). The labels no longer match the shapes drawn, which
does not matter for memory and time. For each phase size P the classes are divided with
maskrcnn_benchmark.lst.division (base b, phase size P), so phase 1 holds the P most frequent
new classes, and for each gradient-caching setting a FRESH subprocess (its peak RSS is the run's
own) builds the phase-1 model of configs/synthetic/lst/incremental.yaml with
MODEL.FEW_SHOT.ENABLED True, then runs ``--warmup`` + ``--episodes`` episodes of the episodic
step (support pass over the P classes, query losses with the generated rows, one optimizer step;
the episodic trainer's own ``run_step``) on the query batches of the phase's data loader
(balanced replay). Settings for the benchmark only:

* random initialisation (no expanded theta_0 checkpoint) and distillation off (no teacher);
* DATALOADER.NUM_WORKERS 0, so the images are loaded in the measured process;
* the end-of-phase pass over every support image (final_novel_weights) is not run.

Reported per P: peak RSS of the subprocess (resource.getrusage ru_maxrss, MiB), RSS after the
set-up (libraries, model, optimizer, generator, data loader; before the first episode), their
difference (what the episodes add), median seconds per timed episode (support and query batch
loading included), and on a GPU (``--device cuda``) torch.cuda.max_memory_allocated. Prints a
markdown table with ratios to ``--reference`` (within each caching setting) and whether the goal
is met with caching (the CUDA peak decides on a GPU, the peak RSS on the CPU).

    python tools/benchmarks/bench_mwg_memory.py [--phase-sizes 40 160 480 960] [--reference 160]
        [--gradient-cache both|on|off] [--base 24] [--warmup 2] [--episodes 5] [--device cpu|cuda]
        [--work-dir DIR] [KEY VALUE ...]

KEY VALUE pairs override the phase config of every run, e.g. ``MODEL.MASK_ON False`` to see how
much of the growth the mask head takes.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

SYNTHETIC_TRAIN_JSON = os.path.join(ROOT, "datasets", "synthetic_lt", "train.json")
SYNTHETIC_TRAIN_IMAGES = os.path.join(ROOT, "datasets", "synthetic_lt", "images", "train")
CONFIG_DIR = os.path.join(ROOT, "configs", "synthetic", "lst")
DATASET_NAME = "mwg_bench_train"
NUM_NEW_CLASSES = 960
NEW_HEAD_INSTANCES = 200  # instances of the most frequent new class
NEW_TAIL_EXPONENT = 0.7  # new class of rank r (1-based) gets round(200 * r^-0.7) instances, >= 1
GOAL_PHASE_SIZE, GOAL_REFERENCE, GOAL_RATIO = 960, 160, 1.2  # with caching, 960 new classes <= 1.2x the memory of 160
CACHE_SETTINGS = {"on": [True], "off": [False], "both": [True, False]}
RESULT_PREFIX = "MWG_BENCH_RESULT "
MIB = 1024.0 * 1024.0

_CATALOG_TEMPLATE = '''"""DatasetCatalog of the MWG memory benchmark (written by bench_mwg_memory.py)."""


class DatasetCatalog:
    DATASETS = {datasets!r}

    @staticmethod
    def get(name):
        entry = DatasetCatalog.DATASETS[name]
        return dict(factory="LVISDataset", args=dict(root=entry["root"], ann_file=entry["ann_file"]))
'''


# ----------------------------------------------------------------------------- data set
def new_class_instance_counts(num_new, head=NEW_HEAD_INSTANCES, exponent=NEW_TAIL_EXPONENT):
    """Instances of the new classes by rank: max(1, round(head * r^-exponent)), r = 1..num_new."""
    ranks = np.arange(1, num_new + 1, dtype=np.float64)
    return [max(1, int(round(head * r ** -exponent))) for r in ranks]


def _frequency(image_count):
    """LVIS's frequency group of a category: r (1-10 images), c (11-100), f (> 100)."""
    return "r" if image_count <= 10 else ("c" if image_count <= 100 else "f")


def relabel_long_tailed(data, num_base, num_new=NUM_NEW_CLASSES, seed=0):
    """An LVIS-shaped copy of ``data`` (LVIS-format dict) with num_base + num_new categories.

    The annotations, in a seeded random order, go first to the new classes (ids num_base + 1 ..,
    by rank, new_class_instance_counts each), the rest round-robin to the base classes (ids
    1..num_base), which therefore are the most frequent. The categories carry image_count,
    instance_count and frequency; the images' negative / not-exhaustive lists are emptied (they
    named the old categories).

    Raises ValueError when there are too few annotations for a base class to outnumber every
    new class.
    """
    annotations = data["annotations"]
    new_counts = new_class_instance_counts(num_new)
    base_share = (len(annotations) - sum(new_counts)) // num_base
    if base_share <= new_counts[0]:
        raise ValueError(
            "{} annotations are too few for {} base classes above {} new classes of up to {} "
            "instances; lower --base or use a larger training json".format(
                len(annotations), num_base, num_new, new_counts[0]))
    labels = np.repeat(np.arange(num_base + 1, num_base + num_new + 1), new_counts)
    base_labels = 1 + np.arange(len(annotations) - len(labels)) % num_base
    order = np.random.default_rng(seed).permutation(len(annotations))
    category_of = np.empty(len(annotations), dtype=np.int64)
    category_of[order] = np.concatenate([labels, base_labels])

    relabelled = [dict(a, category_id=int(c)) for a, c in zip(annotations, category_of)]
    images_of = {}
    for annotation in relabelled:
        images_of.setdefault(annotation["category_id"], set()).add(annotation["image_id"])
    categories = []
    for category_id in range(1, num_base + num_new + 1):
        group = "base" if category_id <= num_base else "new"
        name = "{}_{:04d}".format(group, category_id)
        image_count = len(images_of.get(category_id, ()))
        categories.append({
            "id": category_id, "name": name, "synset": name + ".n.01", "synonyms": [name],
            "def": "relabelled synthetic category", "frequency": _frequency(image_count),
            "image_count": image_count,
            "instance_count": int((category_of == category_id).sum()),
        })
    images = [dict(image, neg_category_ids=[], not_exhaustive_category_ids=[]) for image in data["images"]]
    return dict(data, categories=categories, images=images, annotations=relabelled)


def write_experiments(work_dir, phase_sizes, num_base, source_json=SYNTHETIC_TRAIN_JSON,
                      image_dir=SYNTHETIC_TRAIN_IMAGES):
    """The relabelled json, a paths catalog naming it DATASET_NAME, and per phase size P the
    experiment folder work_dir/P<P> (phases.json, replay plans). Returns (catalog, {P: folder})."""
    from maskrcnn_benchmark.lst.experiment import Experiment

    if not os.path.isfile(source_json):
        raise FileNotFoundError(
            "{} does not exist; make the synthetic benchmark first: python tools/make_synthetic_lvis.py "
            "--output datasets/synthetic_lt".format(source_json))
    with open(source_json) as f:
        data = json.load(f)
    train_json = os.path.join(work_dir, "train_lvis_shaped.json")
    with open(train_json, "w") as f:
        json.dump(relabel_long_tailed(data, num_base), f)
    catalog = os.path.join(work_dir, "mwg_bench_catalog.py")
    with open(catalog, "w") as f:
        f.write(_CATALOG_TEMPLATE.format(datasets={DATASET_NAME: {"root": image_dir, "ann_file": train_json}}))
    experiments = {}
    for phase_size in phase_sizes:
        experiments[phase_size] = os.path.join(work_dir, "P{}".format(phase_size))
        Experiment(experiments[phase_size]).prepare(train_json, num_base, phase_size)
    return catalog, experiments


# ----------------------------------------------------------------------------- one measured run
def run_episodes(experiment_dir, catalog, warmup, episodes, device_name, opts=()):
    """Build phase 1 of ``experiment_dir`` with MWG (and the KEY VALUE ``opts``) and run
    warmup + episodes episodes.

    Returns a dict: new_classes, num_classes, rss_setup_mib, peak_rss_mib, seconds_per_episode
    (median of the timed episodes), episode_seconds, cuda_max_allocated_mib (None on the CPU).
    """
    import torch

    from maskrcnn_benchmark.lst.episodic_trainer import EpisodicTrainer, build_episodic_weight_generator
    from maskrcnn_benchmark.lst.experiment import Experiment
    from maskrcnn_benchmark.lst.phase import ResolvedPhase, make_phase_data_loader
    from maskrcnn_benchmark.lst.phase_config import phase_config
    from maskrcnn_benchmark.utils.checkpoint import Checkpointer
    from maskrcnn_benchmark.modeling.detector import build_detection_model
    from maskrcnn_benchmark.solver import make_lr_scheduler, make_optimizer

    torch.manual_seed(0)
    phases = Experiment(experiment_dir).load_phases()
    cfg = phase_config(CONFIG_DIR, experiment_dir, 1, [
        "MODEL.LST.BASE_SIZE", phases["base"],
        "MODEL.LST.PHASE_SIZE", phases["phase_size"],
        "PATHS_CATALOG", catalog,
        "DATASETS.TRAIN", (DATASET_NAME,),
        "DATASETS.TEST", (DATASET_NAME,),
        "MODEL.DEVICE", device_name,
        "MODEL.FEW_SHOT.ENABLED", True,
        "MODEL.LST.DISTILL.ENABLED", False,
        "DATALOADER.NUM_WORKERS", 0,
        "SOLVER.MAX_ITER", warmup + episodes,
        *opts,
    ])
    device = torch.device(device_name)
    model = build_detection_model(cfg).to(device).train()
    optimizer = make_optimizer(cfg, model)
    phase = ResolvedPhase.from_config(cfg)
    generator = build_episodic_weight_generator(cfg, phase, model, optimizer)
    scheduler = make_lr_scheduler(cfg, optimizer)
    data_loader = make_phase_data_loader(cfg, is_train=True)
    trainer = EpisodicTrainer(cfg, model, generator, phase, data_loader, optimizer, scheduler, Checkpointer(model),
                              device, {"iteration": 0})
    rss_setup = _current_rss_mib()

    durations = []
    start = time.perf_counter()
    for episode, (images, targets, _) in enumerate(data_loader):
        trainer.iter = episode + 1
        trainer.run_step(images.to(device), [t.to(device) for t in targets])
        scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        end = time.perf_counter()
        if episode >= warmup:
            durations.append(end - start)
        start = end
    return {
        "new_classes": len(phase.new_labels),
        "num_classes": cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES,
        "rss_setup_mib": rss_setup,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "seconds_per_episode": statistics.median(durations),
        "episode_seconds": durations,
        "cuda_max_allocated_mib": torch.cuda.max_memory_allocated(device) / MIB if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
    }


def _current_rss_mib():
    """Resident set size of this process now (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / MIB


def measure_in_subprocess(experiment_dir, catalog, args, gradient_cache):
    """run_episodes in a fresh Python process, with MODEL.FEW_SHOT.GRADIENT_CACHE ``gradient_cache``
    (then the ``opts``); returns its result dict."""
    command = [sys.executable, os.path.abspath(__file__), "--run-one", experiment_dir, "--catalog", catalog,
               "--warmup", str(args.warmup), "--episodes", str(args.episodes), "--device", args.device,
               "MODEL.FEW_SHOT.GRADIENT_CACHE", str(gradient_cache), *args.opts]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    results = [line[len(RESULT_PREFIX):] for line in completed.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if completed.returncode != 0 or not results:
        raise RuntimeError("measured run for {} failed (exit {}):\n{}".format(
            experiment_dir, completed.returncode, completed.stderr[-4000:]))
    return json.loads(results[-1])


# ----------------------------------------------------------------------------- table
def ratio_rows(results, reference):
    """Rows with ratios to the reference phase size.

    Arguments:
        results (dict): phase size -> result dict of run_episodes.
        reference (int): a key of ``results``.
    Returns:
        list[dict] by phase size: phase_size, the result's values, training_rss_mib = peak RSS -
        RSS after set-up (what the episodes add), and peak_rss_ratio, training_rss_ratio,
        time_ratio, cuda_ratio (None without a GPU value) = value / the reference's value.
    """
    if reference not in results:
        raise ValueError("the reference phase size {} was not measured (measured: {})".format(
            reference, sorted(results)))
    ref = results[reference]
    ref_training = ref["peak_rss_mib"] - ref["rss_setup_mib"]
    rows = []
    for phase_size in sorted(results):
        result = results[phase_size]
        cuda = result.get("cuda_max_allocated_mib")
        training = result["peak_rss_mib"] - result["rss_setup_mib"]
        rows.append(dict(
            result, phase_size=phase_size, training_rss_mib=training,
            peak_rss_ratio=result["peak_rss_mib"] / ref["peak_rss_mib"],
            training_rss_ratio=training / ref_training,
            time_ratio=result["seconds_per_episode"] / ref["seconds_per_episode"],
            cuda_ratio=cuda / ref["cuda_max_allocated_mib"] if cuda is not None else None,
        ))
    return rows


def goal_verdict(results, goal_size=GOAL_PHASE_SIZE, reference=GOAL_REFERENCE, goal_ratio=GOAL_RATIO):
    """"met" / "NOT met" for the peak memory of goal_size <= goal_ratio x that of reference, or
    None when either was not measured. The CUDA peak decides when measured, else the peak RSS."""
    if goal_size not in results or reference not in results:
        return None
    key = "cuda_max_allocated_mib" if results[goal_size].get("cuda_max_allocated_mib") is not None else "peak_rss_mib"
    return "met" if results[goal_size][key] <= goal_ratio * results[reference][key] else "NOT met"


def markdown_table(rows_by_setting, reference):
    """The benchmark's table (markdown); ``rows_by_setting``: gradient cache (bool) -> ratio_rows."""
    rows = [dict(row, gradient_cache=cache) for cache, cache_rows in rows_by_setting.items() for row in cache_rows]
    with_cuda = any(row["cuda_ratio"] is not None for row in rows)
    header = ["gradient cache", "new classes (P)", "NUM_CLASSES", "RSS after set-up (MiB)", "peak RSS (MiB)",
              "peak RSS / P={}".format(reference), "peak - set-up (MiB)",
              "(peak - set-up) / P={}".format(reference), "s / episode", "time / P={}".format(reference)]
    if with_cuda:
        header += ["CUDA max allocated (MiB)", "CUDA / P={}".format(reference)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for row in rows:
        cells = ["on" if row["gradient_cache"] else "off", str(row["phase_size"]), str(row["num_classes"]), "{:.0f}".format(row["rss_setup_mib"]),
                 "{:.0f}".format(row["peak_rss_mib"]), "{:.2f}x".format(row["peak_rss_ratio"]),
                 "{:.0f}".format(row["training_rss_mib"]), "{:.2f}x".format(row["training_rss_ratio"]),
                 "{:.2f}".format(row["seconds_per_episode"]), "{:.2f}x".format(row["time_ratio"])]
        if with_cuda:
            cells += ["{:.0f}".format(row["cuda_max_allocated_mib"]), "{:.2f}x".format(row["cuda_ratio"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase-sizes", type=int, nargs="+", default=[40, 160, 480, 960])
    parser.add_argument("--reference", type=int, default=160, help="phase size of the ratios' denominator")
    parser.add_argument("--gradient-cache", choices=sorted(CACHE_SETTINGS), default="both",
                        help="MODEL.FEW_SHOT.GRADIENT_CACHE settings to measure")
    parser.add_argument("--base", type=int, default=24, help="base classes b of the relabelled set")
    parser.add_argument("--warmup", type=int, default=2, help="episodes run before timing")
    parser.add_argument("--episodes", type=int, default=5, help="timed episodes")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--work-dir", help="folder for the relabelled set (default: a temporary folder)")
    parser.add_argument("--run-one", metavar="EXPERIMENT_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--catalog", help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of the phase config")
    args = parser.parse_args(argv)
    if max(args.phase_sizes) > NUM_NEW_CLASSES or min(args.phase_sizes) < 1:
        parser.error("phase sizes must be in 1..{}".format(NUM_NEW_CLASSES))
    if args.warmup < 0 or args.episodes < 1:
        parser.error("--warmup must be >= 0 and --episodes >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.run_one:
        result = run_episodes(args.run_one, args.catalog, args.warmup, args.episodes, args.device, args.opts)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("--device cuda: no GPU is available; run with --device cpu")
    phase_sizes = sorted(set(args.phase_sizes) | {args.reference})
    with tempfile.TemporaryDirectory(prefix="mwg_bench_") as temporary:
        work_dir = args.work_dir or temporary
        os.makedirs(work_dir, exist_ok=True)
        catalog, experiments = write_experiments(work_dir, phase_sizes, args.base)
        results = {cache: {} for cache in CACHE_SETTINGS[args.gradient_cache]}
        for cache, cache_results in results.items():
            for phase_size in phase_sizes:
                cache_results[phase_size] = measure_in_subprocess(experiments[phase_size], catalog, args, cache)
                print("gradient cache {}, P = {}: peak RSS {:.0f} MiB, {:.2f} s / episode".format(
                    "on" if cache else "off", phase_size, cache_results[phase_size]["peak_rss_mib"],
                    cache_results[phase_size]["seconds_per_episode"]), file=sys.stderr, flush=True)
    rows = {cache: ratio_rows(cache_results, args.reference) for cache, cache_results in results.items()}
    threads = next(iter(rows.values()))[0]["threads"]
    print("machine: {} ({}), {} logical CPUs, Python {}; device {}; torch threads {} (OMP_NUM_THREADS={}); "
          "base {} + {} new classes; {} warm-up + {} timed episodes (median)".format(
              platform.machine(), _cpu_model(), os.cpu_count(), platform.python_version(), args.device, threads,
              os.environ.get("OMP_NUM_THREADS", "unset"), args.base, NUM_NEW_CLASSES, args.warmup, args.episodes)
          + ("; overrides: " + " ".join(args.opts) if args.opts else ""))
    print(markdown_table(rows, args.reference))
    for cache, cache_results in results.items():
        verdict = goal_verdict(cache_results)
        if verdict is not None:
            print("gradient cache {}: peak memory of P={} <= {}x P={}: {}{}".format(
                "on" if cache else "off", GOAL_PHASE_SIZE, GOAL_RATIO, GOAL_REFERENCE, verdict,
                " (the goal)" if cache else " (no goal: expected to grow with P)"))
    return 0


def _cpu_model():
    """The CPU's model name (Linux /proc/cpuinfo), or the processor string elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
