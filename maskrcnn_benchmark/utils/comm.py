"""Helpers for torch.distributed that also work when no process group is initialised."""
import torch
import torch.distributed as dist


def is_dist_avail_and_initialized():
    return dist.is_available() and dist.is_initialized()


def get_world_size():
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank():
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process():
    return get_rank() == 0


def synchronize():
    """Barrier across all processes; a no-op in single-process runs."""
    if get_world_size() > 1:
        dist.barrier()


def all_gather(data):
    """Gather any picklable object from every rank; returns a list with one entry per rank."""
    if get_world_size() == 1:
        return [data]
    gathered = [None] * get_world_size()
    dist.all_gather_object(gathered, data)
    return gathered


def gather(data, dst=0):
    """Gather picklable objects on rank ``dst`` only (a list there, None elsewhere).

    Unlike :func:`all_gather`, the other ranks never hold everyone's data.
    """
    if get_world_size() == 1:
        return [data]
    gathered = [None] * get_world_size() if get_rank() == dst else None
    dist.gather_object(data, gathered, dst=dst)
    return gathered


def reduce_dict(input_dict, average=True):
    """Reduce a dict of scalar tensors to rank 0 (for logging); other ranks get partial sums.

    Keys are sorted so every rank reduces the same order.
    """
    world_size = get_world_size()
    if world_size < 2:
        return input_dict
    with torch.no_grad():
        names = sorted(input_dict.keys())
        values = torch.stack([input_dict[k] for k in names], dim=0)
        dist.reduce(values, dst=0)
        if dist.get_rank() == 0 and average:
            values /= world_size
        return dict(zip(names, values))
