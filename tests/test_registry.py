"""Tests for webui.models.hashing and webui.models.registry (real files, no mocks)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from webui.models.hashing import (
    BackgroundHasher,
    HashCache,
    legacy_model_hash,
    sha256_dir,
    sha256_file,
)
from webui.models.registry import CheckpointInfo, CheckpointRegistry, UnknownCheckpointError

BIG = 0x100000 + 0x10000 + 123  # past the legacy-hash window


def write(path: Path, size: int, seed: int) -> bytes:
    """Write ``size`` deterministic pseudo-random bytes to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(str(seed).encode()).digest()
    data = (block * (size // len(block) + 1))[:size]
    if size > 0x100000:  # make the legacy window differ between seeds
        data = data[:0x100000] + bytes([seed % 256]) * 16 + data[0x100000 + 16:]
    path.write_bytes(data)
    return data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def tree(tmp_path: Path) -> dict:
    """A checkpoint root with nested files, VAEs, hidden dirs and a diffusers folder."""
    root = tmp_path / "Stable-diffusion"
    files = {
        "alpha.safetensors": write(root / "alpha.safetensors", BIG, 1),
        "sub/Beta.ckpt": write(root / "sub" / "Beta.ckpt", 4096, 2),
        "sub/deep/gamma.safetensors": write(root / "sub" / "deep" / "gamma.safetensors", 100, 3),
    }
    (root / "alpha.yaml").write_text("model: {}\n")
    write(root / "alpha.vae.safetensors", 50, 4)
    write(root / "sub" / "thing.vae.ckpt", 50, 5)
    write(root / ".hidden" / "secret.safetensors", 50, 6)
    (root / "notes.txt").write_text("not a model")
    diff = root / "diffs" / "my-diff.v1"
    (diff / "unet").mkdir(parents=True)
    (diff / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    write(diff / "unet" / "diffusion_pytorch_model.safetensors", 300, 7)
    write(diff / "vae" / "diffusion_pytorch_model.safetensors", 200, 8)
    return {"root": root, "files": files, "diff": diff, "cache": tmp_path / "cache.json"}


def make_registry(tree: dict, hasher: bool = False, cache: HashCache | None = None):
    cache = cache or HashCache(tree["cache"])
    bg = BackgroundHasher(cache) if hasher else None
    reg = CheckpointRegistry([tree["root"]], cache, bg)
    reg.refresh()
    return reg, cache, bg


# ---------------------------------------------------------------- hashing


def test_sha256_file_matches_hashlib(tmp_path):
    data = write(tmp_path / "f.bin", 3 * (1 << 20) + 7, 9)
    assert sha256_file(tmp_path / "f.bin") == sha(data)
    assert sha256_file(tmp_path / "f.bin", chunk=4096) == sha(data)


def test_legacy_hash(tmp_path):
    data = write(tmp_path / "big.bin", BIG, 10)
    assert legacy_model_hash(tmp_path / "big.bin") == sha(data[0x100000:0x110000])[:8]
    partial = write(tmp_path / "partial.bin", 0x100000 + 10, 11)
    assert legacy_model_hash(tmp_path / "partial.bin") == sha(partial[0x100000:])[:8]
    write(tmp_path / "small.bin", 10, 12)
    assert legacy_model_hash(tmp_path / "small.bin") == sha(b"")[:8]


def test_diffusers_dir_hash_definition(tree):
    diff = tree["diff"]
    lines = ""
    for rel in sorted(["model_index.json", "unet/diffusion_pytorch_model.safetensors",
                       "vae/diffusion_pytorch_model.safetensors"]):
        lines += f"{rel}\t{sha((diff / rel).read_bytes())}\n"
    assert sha256_dir(diff) == sha(lines.encode())


def test_hash_cache_get_compute_and_invalidate(tmp_path):
    f = tmp_path / "m.safetensors"
    data = write(f, 1000, 13)
    cache = HashCache(tmp_path / "cache.json")
    assert cache.get(f) is None
    assert cache.compute(f) == sha(data)
    assert cache.get(f) == sha(data)
    assert cache.get(f, kind="lora") is None  # kinds are separate namespaces

    stored = json.loads((tmp_path / "cache.json").read_text())
    (entry,) = stored["hashes"].values()
    assert entry["sha256"] == sha(data) and entry["size"] == 1000
    assert entry["mtime"] == f.stat().st_mtime
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []

    assert HashCache(tmp_path / "cache.json").get(f) == sha(data)  # reloaded from disk
    st = f.stat()
    os.utime(f, (st.st_atime, st.st_mtime + 10))
    assert cache.get(f) is None  # mtime changed
    assert HashCache(tmp_path / "cache.json").get(f) is None


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"hashes": 5}', ""])
def test_corrupt_cache_is_treated_as_empty(tmp_path, content):
    (tmp_path / "cache.json").write_text(content)
    f = tmp_path / "m.ckpt"
    data = write(f, 500, 14)
    cache = HashCache(tmp_path / "cache.json")
    assert cache.get(f) is None
    assert cache.compute(f) == sha(data)
    assert json.loads((tmp_path / "cache.json").read_text())["hashes"]


def test_background_hasher_errors_are_swallowed(tmp_path):
    cache = HashCache(tmp_path / "cache.json")
    bg = BackgroundHasher(cache)
    done = []
    bg.submit(tmp_path / "missing.safetensors", on_done=lambda p, h: done.append(h))
    data = write(tmp_path / "ok.safetensors", 100, 15)
    bg.submit(tmp_path / "ok.safetensors", on_done=lambda p, h: done.append(h))
    assert bg.wait_idle(10)
    assert done == [sha(data)]
    assert bg.pending() == 0


# --------------------------------------------------------------- scanning


def test_scan_finds_models_and_skips_vae_hidden_and_diffusers_contents(tree):
    reg, _, _ = make_registry(tree)
    infos = reg.list()
    assert [i.name for i in infos] == [
        "alpha.safetensors", "diffs/my-diff.v1", "sub/Beta.ckpt", "sub/deep/gamma.safetensors",
    ]
    by_name = {i.name: i for i in infos}
    assert by_name["alpha.safetensors"].kind == "safetensors"
    assert by_name["sub/Beta.ckpt"].kind == "ckpt"
    assert by_name["diffs/my-diff.v1"].kind == "diffusers"
    for info in infos:
        assert info.path.is_absolute()
        assert info.sha256 is None  # no hasher, empty cache
        assert info.title == info.name
    gamma = by_name["sub/deep/gamma.safetensors"]
    assert gamma.size == 100 and gamma.mtime == gamma.path.stat().st_mtime


def test_sorted_case_insensitively(tmp_path):
    root = tmp_path / "r"
    for n in ["b.ckpt", "A.ckpt", "c.safetensors", "B2.ckpt"]:
        write(root / n, 10, 1)
    reg = CheckpointRegistry([root], HashCache(None))
    reg.refresh()
    assert [i.name for i in reg.list()] == ["A.ckpt", "b.ckpt", "B2.ckpt", "c.safetensors"]


def test_properties_sidecar_and_legacy(tree):
    reg, _, _ = make_registry(tree)
    by_name = {i.name: i for i in reg.list()}
    alpha = by_name["alpha.safetensors"]
    assert alpha.config == tree["root"] / "alpha.yaml"
    assert alpha.legacy_hash == sha(tree["files"]["alpha.safetensors"][0x100000:0x110000])[:8]
    assert by_name["sub/Beta.ckpt"].config is None
    assert by_name["sub/Beta.ckpt"].legacy_hash == sha(b"")[:8]

    gamma = by_name["sub/deep/gamma.safetensors"]
    assert gamma.model_name == "sub_deep_gamma"
    assert gamma.name_without_ext == "sub/deep/gamma"
    assert gamma.name_for_extra == "gamma"
    assert gamma.shorthash is None

    diff = by_name["diffs/my-diff.v1"]
    assert diff.legacy_hash is None and diff.config is None
    assert diff.model_name == "diffs_my-diff.v1"  # folder names keep their dots
    assert diff.name_for_extra == "my-diff.v1"
    assert diff.size == 300 + 200 + len((tree["diff"] / "model_index.json").read_bytes())


def test_multiple_roots_and_missing_root(tree, tmp_path):
    other = tmp_path / "other"
    write(other / "zeta.safetensors", 20, 30)
    reg = CheckpointRegistry([tree["root"], tmp_path / "nope", other], HashCache(None))
    reg.refresh()
    names = [i.name for i in reg.list()]
    assert "zeta.safetensors" in names and len(names) == 5


def test_registry_reusable_for_other_kinds(tmp_path):
    root = tmp_path / "Lora"
    write(root / "style.safetensors", 10, 1)
    write(root / "old.pt", 10, 2)
    write(root / "x.vae.pt", 10, 3)
    write(root / "model.ckpt", 10, 4)
    (root / "pipe").mkdir()
    (root / "pipe" / "model_index.json").write_text("{}")
    reg = CheckpointRegistry([root], HashCache(None), extensions=(".safetensors", "pt"),
                             exclude=(), detect_diffusers=False, cache_kind="lora", label="LoRA")
    reg.refresh()
    assert [(i.name, i.kind) for i in reg.list()] == [
        ("old.pt", "pt"), ("style.safetensors", "safetensors"), ("x.vae.pt", "pt"),
    ]
    with pytest.raises(UnknownCheckpointError, match="Unknown LoRA 'nope'"):
        reg.resolve("nope")


def test_refresh_picks_up_added_and_removed_files(tree):
    reg, _, _ = make_registry(tree)
    write(tree["root"] / "new.safetensors", 10, 40)
    (tree["root"] / "sub" / "Beta.ckpt").unlink()
    reg.refresh()
    names = [i.name for i in reg.list()]
    assert "new.safetensors" in names and "sub/Beta.ckpt" not in names


# ----------------------------------------------------------------- hashes


def test_background_hasher_fills_titles_and_cache(tree):
    reg, cache, bg = make_registry(tree, hasher=True)
    assert bg.wait_idle(30)
    by_name = {i.name: i for i in reg.list()}
    for name, data in tree["files"].items():
        info = by_name[name]
        assert info.sha256 == sha(data)
        assert info.shorthash == sha(data)[:10]
        assert info.title == f"{name} [{sha(data)[:10]}]"
    assert by_name["diffs/my-diff.v1"].sha256 == sha256_dir(tree["diff"])
    stored = json.loads(tree["cache"].read_text())["hashes"]
    assert len(stored) == 4
    assert all(k.startswith("checkpoint/") for k in stored)


def test_cache_reused_by_second_registry_and_invalidated_by_touch(tree):
    _, _, bg = make_registry(tree, hasher=True)
    assert bg.wait_idle(30)

    class CountingCache(HashCache):
        """A real HashCache that records which files it actually hashed."""

        def __init__(self, path):
            super().__init__(path)
            self.computed = []

        def compute(self, path, kind="checkpoint"):
            self.computed.append(Path(path).name)
            return super().compute(path, kind)

    cache2 = CountingCache(tree["cache"])
    reg2, _, bg2 = make_registry(tree, hasher=True, cache=cache2)
    assert all(i.sha256 for i in reg2.list())  # straight from the cache, at scan time
    assert bg2.wait_idle(10) and cache2.computed == []

    gamma = tree["root"] / "sub" / "deep" / "gamma.safetensors"
    st = gamma.stat()
    os.utime(gamma, (st.st_atime, st.st_mtime + 5))
    cache3 = CountingCache(tree["cache"])
    reg3, _, bg3 = make_registry(tree, hasher=False, cache=cache3)
    by_name = {i.name: i for i in reg3.list()}
    assert by_name["sub/deep/gamma.safetensors"].sha256 is None
    assert by_name["alpha.safetensors"].sha256 == sha(tree["files"]["alpha.safetensors"])
    assert reg3.ensure_hash(by_name["sub/deep/gamma.safetensors"]) == sha(
        tree["files"]["sub/deep/gamma.safetensors"])
    assert cache3.computed == ["gamma.safetensors"]
    assert reg3.resolve("gamma").sha256 is not None  # stored on the registry entry


def test_diffusers_cache_invalidated_by_inner_file_change(tree):
    reg, cache, _ = make_registry(tree)
    info = reg.resolve("my-diff.v1")
    assert reg.ensure_hash(info) == sha256_dir(tree["diff"])
    assert cache.get(tree["diff"]) == info.sha256
    write(tree["diff"] / "unet" / "diffusion_pytorch_model.safetensors", 301, 99)
    assert cache.get(tree["diff"]) is None


# ---------------------------------------------------------------- resolve


def test_resolve_by_every_key(tree):
    reg, _, bg = make_registry(tree, hasher=True)
    assert bg.wait_idle(30)
    data = tree["files"]["sub/deep/gamma.safetensors"]
    full = sha(data)
    queries = [
        f"sub/deep/gamma.safetensors [{full[:10]}]",  # title
        "sub/deep/gamma.safetensors",  # name
        "sub_deep_gamma",  # model_name
        "sub/deep/gamma",  # name without extension
        "gamma",  # stem
        full[:10],  # short hash
        full,  # full sha256
        "SUB/DEEP/GAMMA.SAFETENSORS",  # case-insensitive
        "Sub_Deep_Gamma",
        "GAMMA",
        full[:10].upper(),
        "sub/deep/gamma.safetensors [0123456789]",  # stale hash in title
        "sub/deep/gamma.safetensors [abcd1234]",  # old-style legacy title
        "sub\\deep\\gamma.safetensors",  # windows separators
        "  gamma  ",
    ]
    for q in queries:
        info = reg.resolve(q)
        assert isinstance(info, CheckpointInfo)
        assert info.name == "sub/deep/gamma.safetensors", q
    alpha_legacy = legacy_model_hash(tree["root"] / "alpha.safetensors")
    assert reg.resolve(alpha_legacy).name == "alpha.safetensors"  # legacy hash
    assert reg.resolve(alpha_legacy.upper()).name == "alpha.safetensors"
    assert reg.resolve("diffs/my-diff.v1").kind == "diffusers"
    assert reg.resolve("diffs_my-diff.v1").kind == "diffusers"
    assert reg.resolve("beta").name == "sub/Beta.ckpt"


def test_resolve_prefers_case_sensitive_match(tmp_path):
    root = tmp_path / "r"
    write(root / "Model.safetensors", 10, 1)
    write(root / "model.safetensors", 10, 2)
    reg = CheckpointRegistry([root], HashCache(None))
    reg.refresh()
    assert reg.resolve("model").name == "model.safetensors"
    assert reg.resolve("Model").name == "Model.safetensors"
    assert reg.resolve("MODEL.safetensors").name == "Model.safetensors"  # first, sorted


def test_resolve_by_hash_computes_unknown_hashes(tree):
    reg, cache, _ = make_registry(tree)  # no background hasher: nothing hashed yet
    full = sha(tree["files"]["sub/Beta.ckpt"])
    assert all(i.sha256 is None for i in reg.list())
    assert reg.resolve(full[:10]).name == "sub/Beta.ckpt"
    assert reg.resolve(full).name == "sub/Beta.ckpt"
    assert cache.get(tree["root"] / "sub" / "Beta.ckpt") == full
    assert all(i.sha256 for i in reg.list())


def test_resolve_returns_copy(tree):
    reg, _, _ = make_registry(tree)
    info = reg.resolve("alpha")
    info.name = "changed"
    assert reg.resolve("alpha").name == "alpha.safetensors"


def test_unknown_checkpoint_message(tree, tmp_path):
    reg, _, _ = make_registry(tree)
    with pytest.raises(KeyError) as exc:
        reg.resolve("nothing-like-this")
    err = exc.value
    assert isinstance(err, UnknownCheckpointError)
    assert err.query == "nothing-like-this"
    assert str(err) == (
        "Unknown checkpoint 'nothing-like-this'. Available: alpha.safetensors, "
        "diffs/my-diff.v1, sub/Beta.ckpt, sub/deep/gamma.safetensors"
    )
    with pytest.raises(UnknownCheckpointError):
        reg.resolve("0123456789")  # hash-like: hashes everything, still unknown

    root = tmp_path / "many"
    for n in range(25):
        write(root / f"m{n:02d}.ckpt", 10, n)
    many = CheckpointRegistry([root], HashCache(None))
    many.refresh()
    msg = str(pytest.raises(UnknownCheckpointError, many.resolve, "x").value)
    assert "m19.ckpt" in msg and "m20.ckpt" not in msg


# ------------------------------------------------------------ concurrency


def test_concurrent_refresh_smoke(tree):
    reg, _, bg = make_registry(tree, hasher=True)
    errors = []

    def worker():
        try:
            for _ in range(20):
                reg.refresh()
                assert len(reg.list()) == 4
                reg.resolve("alpha")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert bg.wait_idle(30)
    reg.refresh()
    assert all(i.sha256 for i in reg.list())
    json.loads(tree["cache"].read_text())  # cache file still valid JSON


def test_ensure_hash_waits_for_the_background_hasher_instead_of_hashing_twice(tmp_path):
    import threading
    import time as _time

    from webui.models import hashing
    from webui.models.hashing import BackgroundHasher, HashCache
    from webui.models.registry import CheckpointRegistry

    (tmp_path / "big.safetensors").write_bytes(b"x" * 3_000_000)
    calls, started = [], threading.Event()
    original = hashing.hash_path

    def slow_hash(path, *args, **kwargs):
        calls.append(threading.current_thread().name)
        started.set()
        _time.sleep(0.5)
        return original(path, *args, **kwargs)

    hashing.hash_path = slow_hash
    try:
        cache = HashCache(tmp_path / "cache.json")
        registry = CheckpointRegistry([tmp_path], cache, BackgroundHasher(cache))
        registry.refresh()
        assert started.wait(5)
        info = registry.resolve("big")
        assert registry.ensure_hash(info) == original(tmp_path / "big.safetensors")
        assert calls == ["model-hasher"]
    finally:
        hashing.hash_path = original
