"""Named parameter sets.

Names follow ``N{log_n}_QP{log_qp}_L{levels}_S{log_scale}`` (levels = the
number of rescalings available, L = number of ciphertext primes - 1).  Sets
named ``INSECURE_*`` are toy sizes for fast tests; :func:`get` refuses them
unless ``allow_insecure=True``.

Every secure set below uses a dense uniform ternary secret and sigma = 3.2 and
is checked at construction against the Homomorphic Encryption Standard (2018)
table for 128-bit classical security (N = 2^16: 1772 bits, as in OpenFHE).
Precision figures are for one fresh public-key encryption (max error over all
slots, from :func:`fhe_ckks.ckks.expected_precision_bits`), and fall by about
one bit per multiplicative level used.
"""

from __future__ import annotations

from functools import lru_cache

from .errors import ParameterError
from .rlwe.params import Parameters, ParametersLiteral

__all__ = ["LITERALS", "get", "names"]

LITERALS: dict[str, ParametersLiteral] = {
    # N = 2^14, log QP = 430 <= 438 (HE standard).  Depth 7 at scale 2^40;
    # q_0 = 50 bits leaves 10 bits of integer part at level 0.  2 special
    # primes, dnum = 4.  Fresh precision >= 21 bits.
    "N14_QP430_L7_S40": ParametersLiteral(
        log_n=14, log_q=(50,) + (40,) * 7, log_p=(50, 50), log_scale=40, name="N14_QP430_L7_S40"),
    # N = 2^15, log QP = 870 <= 881.  Depth 14 at scale 2^45, q_0 = 60 bits,
    # 3 special primes, dnum = 5.  Fresh precision >= 25 bits.
    "N15_QP870_L14_S45": ParametersLiteral(
        log_n=15, log_q=(60,) + (45,) * 14, log_p=(60, 60, 60), log_scale=45, name="N15_QP870_L14_S45"),
    # N = 2^16, log QP = 1650 <= 1772.  24 ciphertext primes (depth 23) at
    # scale 2^50, q_0 = 60 bits, 8 special primes of 55 bits, dnum = 3 (8
    # primes per digit): the benchmark set of the CKKS milestone, comparable
    # with OpenFHE at 24 limbs and dnum 3.  Fresh precision >= 29 bits.
    "N16_QP1650_L23_S50": ParametersLiteral(
        log_n=16, log_q=(60,) + (50,) * 23, log_p=(55,) * 8, log_scale=50, digits=3,
        name="N16_QP1650_L23_S50"),
    # N = 2^16, log QP = 1640 <= 1772: a levelled set for the encrypted
    # CryptoFaceNet at 2 more bits of precision than the default below (and
    # keys a third larger).  30 ciphertext primes: q_0 = 60
    # bits (20 bits of headroom above the scale at level 0) and 29 rescaling
    # primes of 40 bits chosen so that the scales track 2^40 over all 29
    # levels; 7 special primes of 60 bits (420 bits >= one digit of 10 x 40),
    # dnum = 3.  Depth 29 = 23 for a patch network, 4 for the polynomial
    # 1/sqrt normalization, 2 for matching: no bootstrapping at all.
    "N16_QP1640_L29_S40": ParametersLiteral(
        log_n=16, log_q=(60,) + (40,) * 29, log_p=(60,) * 7, log_scale=40, digits=3,
        name="N16_QP1640_L29_S40"),
    # N = 2^16, log QP = 1762 <= 1772: the same 29 levels at scale 2^38 with
    # two key-switching digits (dnum = 2, 15 primes each) and 10 special
    # primes of 60 bits (600 bits >= the largest digit, 592).  Against the
    # 2^40 set: 2 bits less precision, but keys a third smaller (a key at
    # level <= 14 has a single digit) and key switching faster.  The default
    # of the encrypted CryptoFaceNet (cryptoface.encrypted).
    "N16_QP1762_L29_S38": ParametersLiteral(
        log_n=16, log_q=(60,) + (38,) * 29, log_p=(60,) * 10, log_scale=38, digits=2,
        name="N16_QP1762_L29_S38"),
    # N = 2^16 for bootstrapping with sparse-secret encapsulation, dense secret,
    # log QP = 1737 <= 1772.  The chain has three runs of prime sizes (see
    # Parameters.scale_at): q_0 = 60 bits; 8 user levels of 40 bits at scale
    # 2^40; 3 levels of 50 bits for SlotsToCoeffs; 13 levels of 60 bits for
    # EvalMod (10) and CoeffsToSlots (3), where the precision is made.  7
    # special primes of 61 bits, dnum = 4.  With fhe_ckks.bootstrap.CONFIGS[name]
    # (full slots, ephemeral secret of weight 32, K = 16, the sine as one
    # degree-200 polynomial, arcsine) bootstrapping uses the 16 upper levels
    # and leaves the 8 user levels at scale 2^40.
    "BOOT_N16_QP1737_L24_S40": ParametersLiteral(
        log_n=16, log_q=(60,) + (40,) * 8 + (50,) * 3 + (60,) * 13, log_p=(61,) * 7, log_scale=40,
        name="BOOT_N16_QP1737_L24_S40"),
    # N = 2^16, log QP = 1771 <= 1772: bootstrapping with 16 user levels between bootstraps, for the
    # bootstrapped ResNet baselines of issue #16 (MPCNN: AppReLU, 14 levels, then a convolution; the
    # encrypted decision's sign, 16 levels after its own bootstrap, on the same chain).  The chain of
    # BOOT_N16_QP1737_L24_S40 with its bootstrapping runs narrowed to pay for 8 more user levels: q_0 = 60
    # bits; 16 user levels of 36 bits at scale 2^36; 3 levels of 45 bits for SlotsToCoeffs; 13 of 55 bits
    # for EvalMod (10) and CoeffsToSlots (3); 5 special primes of 57 bits, dnum = 7 (5 primes per digit,
    # at most 281 bits, under P's 285).
    "BOOT_N16_QP1771_L32_S36": ParametersLiteral(
        log_n=16, log_q=(60,) + (36,) * 16 + (45,) * 3 + (55,) * 13, log_p=(57,) * 5, log_scale=36, digits=7,
        name="BOOT_N16_QP1771_L32_S36"),
    # ---- toy sets: NOT secure, for tests and examples only --------------------
    # N = 2^10, depth 5 at scale 2^40, 2 special primes (dnum = 3).
    "INSECURE_N10_QP380_L5_S40": ParametersLiteral(
        log_n=10, log_q=(60,) + (40,) * 5, log_p=(60, 60), log_scale=40, name="INSECURE_N10_QP380_L5_S40"),
    # N = 2^12, depth 7 at scale 2^40, 3 special primes (dnum = 3).
    "INSECURE_N12_QP520_L7_S40": ParametersLiteral(
        log_n=12, log_q=(60,) + (40,) * 7, log_p=(60, 60, 60), log_scale=40, digits=3,
        name="INSECURE_N12_QP520_L7_S40"),
    # N = 2^12, depth 18 at scale 2^40, 3 special primes (dnum = 6): a levelled
    # encrypted CNN (the toy CryptoFaceNet of the tests) without bootstrapping.
    "INSECURE_N12_QP900_L18_S40": ParametersLiteral(
        log_n=12, log_q=(60,) + (40,) * 18, log_p=(60, 60, 60), log_scale=40, digits=6,
        name="INSECURE_N12_QP900_L18_S40"),
    # N = 2^12, sparse secret h = 32 (|I| <= 12 w.h.p.), q_0 = 60 bits, 17
    # primes of 55 bits at scale 2^55 (message ratio q_0 / Delta = 2^5), 4
    # special primes: bootstrapping at a toy size for the test suite (depth
    # 15, 2 levels left; measured about 16 bits max / 20 bits mean error).
    "INSECURE_BOOT_N12_QP1235_H32": ParametersLiteral(
        log_n=12, log_q=(60,) + (55,) * 17, log_p=(60,) * 4, log_scale=55, hamming_weight=32,
        name="INSECURE_BOOT_N12_QP1235_H32"),
    # N = 2^12, the chain of BOOT_N16_QP1737_L24_S40 in miniature (dense
    # secret; 3 user levels at 2^40, 3 of 50 bits, 13 of 60 bits): tests of
    # sparse-secret encapsulation and of chains with several runs.
    "INSECURE_BOOT_N12_QP1354_L19_S40": ParametersLiteral(
        log_n=12, log_q=(60,) + (40,) * 3 + (50,) * 3 + (60,) * 13, log_p=(61,) * 4, log_scale=40,
        name="INSECURE_BOOT_N12_QP1354_L19_S40"),
    # N = 2^12, the chain of the encrypted CryptoFaceNet's default N16_QP1762_L29_S38 in miniature (q_0 = 60
    # bits under 29 primes of 38 bits): a toy model's network, its hint and the decision's checks, then the
    # decision's real 8-slot bootstrap (13 levels) and its sign (16), with no secret-key double -- the
    # end-to-end tests of the service, whose server holds public keys only.  3 digits of 10 primes (11 in
    # the first), 8 special primes.
    "INSECURE_N12_QP1642_L29_S38": ParametersLiteral(
        log_n=12, log_q=(60,) + (38,) * 29, log_p=(60,) * 8, log_scale=38, digits=3,
        name="INSECURE_N12_QP1642_L29_S38"),
    # N = 2^12, the chain of BOOT_N16_QP1771_L32_S36 in miniature (16 user levels at 2^36, 3 of 45 bits, 13 of
    # 55, 5 special primes, dnum = 7): tests of bootstrapped networks with the real bootstrapper, whose
    # activations need many levels between bootstraps (the ResNet baselines).
    "INSECURE_BOOT_N12_QP1771_L32_S36": ParametersLiteral(
        log_n=12, log_q=(60,) + (36,) * 16 + (45,) * 3 + (55,) * 13, log_p=(57,) * 5, log_scale=36, digits=7,
        name="INSECURE_BOOT_N12_QP1771_L32_S36"),
}


def names(include_insecure: bool = True) -> list[str]:
    """Preset names, secure ones first."""
    out = [k for k in LITERALS if not k.startswith("INSECURE_")]
    if include_insecure:
        out += [k for k in LITERALS if k.startswith("INSECURE_")]
    return out


@lru_cache(maxsize=None)
def _build(name: str, allow_insecure: bool) -> Parameters:
    return Parameters.from_literal(LITERALS[name], allow_insecure=allow_insecure)


def get(name: str, *, allow_insecure: bool = False) -> Parameters:
    """The :class:`~fhe_ckks.rlwe.Parameters` of a preset (built once, cached).

    Raises:
        ParameterError: unknown name.
        SecurityError: an ``INSECURE_`` preset without ``allow_insecure=True``.
    """
    if name not in LITERALS:
        raise ParameterError(f"unknown preset {name!r}; known: {', '.join(names())}")
    return _build(name, bool(allow_insecure) and name.startswith("INSECURE_"))
