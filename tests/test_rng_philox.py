"""A1111's "NV" random source (webui/engine/sampling/rng_philox.py): Philox4x32-10 + Box-Muller on the CPU."""
from __future__ import annotations

import math

import numpy as np
import pytest

from webui.engine.sampling.rng_philox import PhiloxGenerator, philox4x32

# Philox4x32-10 known-answer vectors of the Random123 distribution (D. E. Shaw Research, github.com/DEShawResearch/
# random123, file tests/kat_vectors, its "philox4x32 10" lines): counter words 0-3, key words 0-1, output words 0-3.
KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),  # digits of pi
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter, key, expected", KAT)
def test_philox_known_answers(counter, key, expected):
    out = philox4x32(counter, key)
    assert out.dtype == np.uint32 and out.shape == (4,)
    assert [int(w) for w in out] == list(expected)


def test_philox_vectorised_matches_one_by_one():
    counters = [KAT[0][0], KAT[2][0], (5, 6, 7, 8)]
    out = philox4x32([np.array([c[i] for c in counters], dtype=np.uint32) for i in range(4)], KAT[2][1])
    for j, counter in enumerate(counters):
        assert out[:, j].tolist() == philox4x32(counter, KAT[2][1]).tolist()


# --- an independent scalar model of the stream, from the definition -----------------------------------------------

def _philox_scalar(counter, key):
    """Philox4x32-10 on Python ints (Salmon et al. 2011): 10 rounds, key bumped by the Weyl constants between."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
        p0, p1 = c0 * 0xD2511F53, c2 * 0xCD9E8D57
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & 0xFFFFFFFF, (p0 >> 32) ^ c3 ^ k1, p0 & 0xFFFFFFFF
    return c0, c1, c2, c3


def _expected(seed: int, call: int, index: int) -> float:
    """Element `index` of the generator's `call`-th randn: counter (call, 0, index, 0), key = the seed's two words;
    Box-Muller's sine value from the first two words with curand's float32 scales, in double, as A1111 computes it."""
    x, y, _, _ = _philox_scalar((call, 0, index, 0), (seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF))
    scale_u = float(np.float32(2.3283064e-10))  # 2^-32
    scale_v = float(np.float32(2.3283064e-10 * 6.2831855))  # 2^-32 * 2 pi
    u = x * scale_u + scale_u / 2
    v = y * scale_v + scale_v / 2
    return float(np.float32(math.sqrt(-2.0 * math.log(u)) * math.sin(v)))


@pytest.mark.parametrize("seed", [0, 1, 3_000_000_000, 2**32 + 7, 2**63 + 12345])
def test_stream_layout(seed):
    generator = PhiloxGenerator(seed)
    first, second = generator.randn((2, 3)), generator.randn((5,))
    for call, values in enumerate([first.ravel(), second]):
        for index, value in enumerate(values):
            expected = np.float32(_expected(seed, call, index))
            assert abs(value - expected) <= np.spacing(abs(expected))  # libm and numpy's double log/sin: <= 1 ulp


# --- published outputs -------------------------------------------------------------------------------------------

def test_a1111_published_example():
    """The example in the docstring of A1111's modules/rng_philox.py: Generator(seed=0).randn(shape=(3, 4)).

    That docstring was printed from a float64 variant with the exact constants 2^-32 and 2 pi; the code A1111 ships
    (and we follow) uses curand's float32-rounded constants, which moves the values by up to ~2e-7."""
    published = [[-0.92466259, -0.42534415, -2.6438457, 0.14518388],
                 [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
                 [-1.07454231, -0.36314407, -1.67105067, 2.26550497]]
    assert np.allclose(PhiloxGenerator(0).randn((3, 4)), published, rtol=0, atol=5e-7)


def test_matches_torch_cuda_randn_seed_0():
    """An 8x8 torch.randn on CUDA after torch.manual_seed, as printed (4 decimals) in public notes of a CUDA-mode
    lecture (the values are seed 0's): for a tensor this small, torch's CUDA kernel uses the counters A1111 imitates."""
    printed = [
        [-0.9247, -0.4253, -2.6438, 0.1452, -0.1209, -0.5797, -0.6229, -0.3284],
        [-1.0745, -0.3631, -1.6711, 2.2655, 0.3117, -0.1842, 1.2866, 1.1820],
        [-0.1271, 1.2169, 1.4353, 1.0605, -0.4941, -1.4244, -0.7244, -1.2973],
        [0.0697, -0.0074, 1.8969, 0.6878, -0.0779, -0.8373, 1.3506, -0.2879],
        [-0.5965, -0.3283, -0.9086, -0.8059, -0.7407, -0.0504, 0.5435, 1.5150],
        [0.0141, 0.4532, 1.6349, 0.7124, -0.1806, 1.0252, -1.4622, -0.7554],
        [-0.1836, 0.3824, 0.3918, -0.0830, 0.8971, -1.1123, 0.1116, 0.4863],
        [-0.5499, -0.3231, -0.5469, 0.9049, 0.2837, 0.1210, 0.4730, -1.0823],
    ]
    assert np.allclose(PhiloxGenerator(0).randn((8, 8)), printed, rtol=0, atol=5.01e-5)


def test_regression_bits():
    """Our exact float32 output (A1111's arithmetic): pinned so a change in the arithmetic shows."""
    generator = PhiloxGenerator(0)
    assert generator.randn(4).view(np.uint32).tolist() == [0xBF6CB6AD, 0xBED9C6AF, 0xC02934C5, 0x3E14AB15]
    assert generator.randn(4).view(np.uint32).tolist() == [0x3E392A6C, 0xBF0D6117, 0x3F6C7F09, 0xBF3C2704]
    assert PhiloxGenerator(2**32 + 7).randn(3).view(np.uint32).tolist() == [0xBE90C2AC, 0xBF81A392, 0x3C1C1ECB]


# --- behaviour ---------------------------------------------------------------------------------------------------------

def test_deterministic_and_seed_dependent():
    a, b = PhiloxGenerator(1234).randn((4, 8, 8)), PhiloxGenerator(1234).randn((4, 8, 8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, PhiloxGenerator(1235).randn((4, 8, 8)))
    assert not np.array_equal(PhiloxGenerator(7).randn(16), PhiloxGenerator(7 + 2**32).randn(16))  # high key word


def test_shape_and_dtype():
    generator = PhiloxGenerator(5)
    out = generator.randn((2, 4, 16, 16))
    assert out.shape == (2, 4, 16, 16) and out.dtype == np.float32
    assert generator.randn(7).shape == (7,)
    assert generator.randn([3, 2]).shape == (3, 2)
    assert generator.randn(()).shape == ()
    assert generator.randn((0, 4)).shape == (0, 4)


def test_values_follow_flat_c_order():
    """Element i of a call is counter index i of the flattened tensor: any shape of a call is a reshape of a prefix."""
    flat = PhiloxGenerator(99).randn(24)
    assert np.array_equal(PhiloxGenerator(99).randn((2, 3, 4)), flat.reshape(2, 3, 4))
    assert np.array_equal(PhiloxGenerator(99).randn(10), flat[:10])


def test_successive_calls_continue_the_stream():
    generator = PhiloxGenerator(42)
    first, second, third = generator.randn(64), generator.randn(64), generator.randn(16)
    assert generator.offset == 3
    assert not np.array_equal(first, second)
    assert not np.array_equal(second[:16], third)
    # the second call is the stream at offset 1, whatever size the first call had
    other = PhiloxGenerator(42)
    other.randn(5)
    assert np.array_equal(other.randn(64), second)
    resumed = PhiloxGenerator(42)
    resumed.offset = 2
    assert np.array_equal(resumed.randn(16), third)


def test_negative_seed_wraps_to_64_bits():
    assert PhiloxGenerator(-1).key == (0xFFFFFFFF, 0xFFFFFFFF)
    assert np.array_equal(PhiloxGenerator(-1).randn(8), PhiloxGenerator(2**64 - 1).randn(8))


def test_statistics():
    generator = PhiloxGenerator(2024)
    first, second = generator.randn(100_000).astype(np.float64), generator.randn(100_000).astype(np.float64)
    for sample in (first, second):
        assert np.all(np.isfinite(sample))
        assert abs(sample.mean()) < 0.015  # standard error 0.003
        assert abs(sample.std() - 1) < 0.015
        assert abs(np.mean(np.abs(sample) < 1) - 0.6827) < 0.01
        assert abs(np.mean(sample**3)) < 0.05 and abs(np.mean(sample**4) - 3) < 0.1  # symmetric, Gaussian tails
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.015  # successive calls are independent
    assert abs(np.corrcoef(first[:-1], first[1:])[0, 1]) < 0.015  # neighbours too
