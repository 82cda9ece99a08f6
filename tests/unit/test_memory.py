"""bas.memory: cgroup v1/v2 limits read from a fake /proc and /sys, and page-cache residency."""

import os

import pytest

from bas.memory import MemoryInfo, cached_fraction, cgroup_memory, memory_info

GIB = 1 << 30
MEMINFO = "MemTotal:       32000000 kB\nMemFree:  1000 kB\nMemAvailable:   20000000 kB\n"


def _write(root, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _v2_root(tmp_path, cgroup="/user.slice/job", mount_root="/"):
    _write(tmp_path, "proc/meminfo", MEMINFO)
    _write(tmp_path, "proc/self/cgroup", f"0::{cgroup}\n")
    _write(tmp_path, "proc/self/mountinfo",
           "22 1 0:20 / / rw - ext4 /dev/vda rw\n"
           f"31 22 0:28 {mount_root} /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")
    return tmp_path / "sys/fs/cgroup"


def _v2_group(base, rel, max_="max", high="max", current=0, file_pages=0):
    for name, value in (("memory.max", max_), ("memory.high", high),
                        ("memory.current", current)):
        _write(base, f"{rel}/{name}".lstrip("/"), f"{value}\n")
    _write(base, f"{rel}/memory.stat".lstrip("/"),
           f"anon 1000\nfile {file_pages}\nactive_file {file_pages // 2}\n"
           f"inactive_file {file_pages - file_pages // 2}\n")


def test_v2_takes_the_tightest_limit_up_the_hierarchy(tmp_path):
    base = _v2_root(tmp_path)
    _v2_group(base, "user.slice/job", current=GIB // 4)
    _v2_group(base, "user.slice", max_=3 * GIB // 2, current=GIB // 2, file_pages=GIB // 4)
    limit, headroom, source = cgroup_memory(str(tmp_path))
    assert limit == 3 * GIB // 2
    assert source == "cgroup v2 memory.max of /user.slice"
    assert headroom == 3 * GIB // 2 - GIB // 2 + GIB // 4  # its page cache can be given back
    info = memory_info(root=str(tmp_path))
    assert info == MemoryInfo(3 * GIB // 2, headroom, None, source)


def test_v2_memory_high_counts_as_a_limit(tmp_path):
    base = _v2_root(tmp_path)
    _v2_group(base, "user.slice/job", max_=4 * GIB, high=GIB)
    _v2_group(base, "user.slice")
    limit, _, source = cgroup_memory(str(tmp_path))
    assert (limit, source) == (GIB, "cgroup v2 memory.high of /user.slice/job")


def test_v2_without_limits_is_unlimited_and_uses_memavailable(tmp_path):
    base = _v2_root(tmp_path)
    _v2_group(base, "user.slice/job")
    _v2_group(base, "user.slice")
    assert cgroup_memory(str(tmp_path)) == (None, None, "")
    info = memory_info(root=str(tmp_path))
    assert info.limit is None and info.available == 20000000 * 1024


def test_v2_container_mount_shows_a_subtree(tmp_path):
    """A container mounts its own cgroup at /sys/fs/cgroup; /proc/self/cgroup names the path
    from the host's root."""
    base = _v2_root(tmp_path, cgroup="/docker/abc", mount_root="/docker/abc")
    _v2_group(base, "", max_=GIB, current=GIB // 8)
    limit, headroom, source = cgroup_memory(str(tmp_path))
    assert (limit, headroom, source) == (GIB, GIB - GIB // 8, "cgroup v2 memory.max of /")


def test_v1_memory_controller_and_hybrid_layout(tmp_path):
    """cgroup v1 (memory.limit_in_bytes under the memory controller's mount) beside a v2
    hierarchy without the memory controller, as on hybrid systems."""
    _write(tmp_path, "proc/meminfo", MEMINFO)
    _write(tmp_path, "proc/self/cgroup", "4:memory:/batch/job7\n3:cpu,cpuacct:/\n0::/\n")
    _write(tmp_path, "proc/self/mountinfo",
           "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
           "32 31 0:29 / /sys/fs/cgroup/cpu\\040acct rw - cgroup cgroup rw,cpu,cpuacct\n"
           "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n")
    mem = "sys/fs/cgroup/memory"
    unlimited = "9223372036854771712\n"
    _write(tmp_path, f"{mem}/memory.limit_in_bytes", unlimited)
    _write(tmp_path, f"{mem}/batch/memory.limit_in_bytes", f"{2 * GIB}\n")
    _write(tmp_path, f"{mem}/batch/memory.usage_in_bytes", f"{GIB}\n")
    _write(tmp_path, f"{mem}/batch/memory.stat",
           f"total_active_file {GIB // 2}\ntotal_inactive_file 0\n")
    _write(tmp_path, f"{mem}/batch/job7/memory.limit_in_bytes", unlimited)
    _write(tmp_path, f"{mem}/batch/job7/memory.usage_in_bytes", "1000\n")
    (tmp_path / "sys/fs/cgroup/unified").mkdir(parents=True)
    limit, headroom, source = cgroup_memory(str(tmp_path))
    assert (limit, source) == (2 * GIB, "cgroup v1 memory.limit_in_bytes of /batch")
    assert headroom == 2 * GIB - GIB + GIB // 2


def test_v1_hierarchical_limit_covers_ancestors_a_container_cannot_see(tmp_path):
    _write(tmp_path, "proc/meminfo", MEMINFO)
    _write(tmp_path, "proc/self/cgroup", "4:memory:/docker/abc\n")
    _write(tmp_path, "proc/self/mountinfo",
           "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    mem = "sys/fs/cgroup/memory"
    _write(tmp_path, f"{mem}/memory.limit_in_bytes", "9223372036854771712\n")
    _write(tmp_path, f"{mem}/memory.stat", f"hierarchical_memory_limit {GIB}\n")
    assert cgroup_memory(str(tmp_path))[0] == GIB


def test_missing_proc_and_sys_mean_no_limit(tmp_path):
    assert cgroup_memory(str(tmp_path)) == (None, None, "")
    info = memory_info(root=str(tmp_path))
    assert info.limit is None and info.available > 0 and info.input_cached_fraction is None


def test_limit_above_physical_memory_is_no_limit(tmp_path):
    base = _v2_root(tmp_path)
    _v2_group(base, "user.slice/job", max_=64 * GIB)
    _v2_group(base, "user.slice")
    info = memory_info(root=str(tmp_path))
    assert info.limit is None and info.source == ""


def test_this_process_reads_sane_figures():
    with open(__file__, "rb") as f:
        f.read()  # now: collection read it long ago, and this VM drops cold page cache
    info = memory_info(__file__)
    assert 0 < info.available
    assert info.limit is None or info.limit > 0
    assert info.input_cached_fraction == 1.0  # just read


def test_residency_follows_the_page_cache(tmp_path):
    path = tmp_path / "data"
    size = 8 << 20
    with open(path, "wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
    assert cached_fraction(str(path)) == 1.0  # just written
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        if cached_fraction(str(path)) > 0.1:
            pytest.skip("this file system keeps the pages (tmpfs?): cannot make a cold file")
        assert cached_fraction(str(path)) == 0.0
        assert cached_fraction(str(path)) == 0.0, "the probe itself must not load pages"
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no readahead past what we read
        os.pread(fd, size // 2, 0)
        assert 0.45 <= cached_fraction(str(path)) <= 0.6
    finally:
        os.close(fd)


def test_residency_of_empty_and_missing_files(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    assert cached_fraction(str(tmp_path / "empty")) == 1.0
    assert cached_fraction(str(tmp_path / "missing")) is None


def test_describe_names_the_facts():
    text = MemoryInfo(3 * GIB // 2, GIB, 0.03, "cgroup v2 memory.max of /a").describe()
    assert text == ("1.5 GiB cgroup v2 memory.max of /a, 1.0 GiB available, "
                    "input 3% in the page cache")
