import pytest

from tracker.rank_utils.devices import gpu_index_for, visible_devices

MIG = "MIG-5c89ae17-0c2a-5b6f-8a9e-4d6b7c3e2f10"

# (local_rank, CUDA_VISIBLE_DEVICES, physical device count, NVML device expected)
MAPPING = {
    "unset uses local rank": (1, None, None, 1),
    "unset within count": (3, None, 8, 3),
    "unset wraps past count": (9, None, 8, 1),
    "no GPUs at all": (0, None, 0, None),
    "listed indices": (1, "2,3", None, 3),
    "first listed index": (0, "2,3", 8, 2),
    "spaces around entries": (1, "0, 1", None, 1),
    "more ranks than listed GPUs wraps": (2, "2,3", None, 2),
    "empty hides all": (0, "", None, None),
    "blank hides all": (0, "  ", 4, None),
    "minus one hides all": (0, "-1", 4, None),
    "NoDevFiles hides all": (0, "NoDevFiles", 4, None),
    "garbage hides all": (0, "abc", 4, None),
    "list ends at minus one": (1, "0,-1,1", None, 0),
    "list ends at empty entry": (1, "0,,1", None, 0),
    "leading invalid hides all": (0, "-1,0", None, None),
    "list ends at repeated device": (1, "1,1", None, 1),
    "list ends at index beyond count": (1, "0,7", 4, 0),
    "GPU UUIDs": (1, "GPU-aaaa-1111,GPU-bbbb-2222", None, "GPU-bbbb-2222"),
    "MIG UUID": (0, MIG, 1, MIG),
    "index then UUID": (1, "0,GPU-bbbb-2222", None, "GPU-bbbb-2222"),
    "zero count beats visible list": (0, "0,1", 0, None),
}


@pytest.mark.parametrize(
    ("local_rank", "visible", "count", "expected"), MAPPING.values(), ids=MAPPING.keys()
)
def test_gpu_index_for(local_rank, visible, count, expected):
    assert gpu_index_for(local_rank, visible, count) == expected


@pytest.mark.parametrize("bad", [-1, 1.0, "0", True])
def test_bad_local_rank_is_refused(bad):
    with pytest.raises(ValueError, match="local_rank"):
        gpu_index_for(bad, None)


@pytest.mark.parametrize(
    ("value", "count", "expected"),
    [
        ("2,3", None, [2, 3]),
        ("3,2", 4, [3, 2]),
        ("0,1,9", 4, [0, 1]),
        ("GPU-x,MIG-y", None, ["GPU-x", "MIG-y"]),
        ("nodevfiles", None, []),
    ],
)
def test_visible_devices_keeps_cuda_order(value, count, expected):
    assert visible_devices(value, count) == expected
