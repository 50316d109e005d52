"""Randomness is never shared by forked processes (Hardening, section 2).

A parent holding a :class:`KeyGenerator`, an :class:`Encryptor` or a flooding
:class:`Decryptor` forks two children; each child produces output from the
object it inherited and sends it back through a pipe.  The children's outputs
must differ from each other and from what the parent produces next.  Before
the fix both children continued the same SHAKE-256 state, and the difference
``c0 - c0'`` of two symmetric encryptions of different messages decoded to
``m - m'`` to about 1e-15, without the key.

Public-seed expansions (the uniform half of a key or of a seeded ciphertext)
must on the contrary be identical in parent and child: a forked server
worker re-expands keys from their seeds.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle

import numpy as np
import pytest

from fhe_ckks import Decryptor, Encoder, Encryptor, KeyGenerator, Plaintext, presets, serialize
from fhe_ckks.ring import SecretStream, Shake256Stream

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is not available on this platform")

PRESET = "INSECURE_N10_QP380_L5_S40"
FIXED_SEED = bytes(range(32))
SEEDS = pytest.mark.parametrize("seed", [None, FIXED_SEED], ids=["os-seed", "fixed-seed"])


@pytest.fixture(scope="module")
def params():
    return presets.get(PRESET, allow_insecure=True)


def in_children(work, count: int = 2) -> list:
    """``work(i)`` in ``count`` children forked from this very state, their
    results in child order (pickled back through a pipe each).

    Every child is forked before any result is read, and the parent runs
    nothing between the forks, so all children start from the same state.
    """
    children = []
    for i in range(count):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            status = 1
            try:
                os.close(read_end)
                with os.fdopen(write_end, "wb") as pipe:
                    pipe.write(pickle.dumps(work(i)))
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        children.append((pid, read_end))
    results = []
    for pid, read_end in children:
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "a forked child failed"
        results.append(pickle.loads(data))
    return results


def assert_all_different(outputs: list) -> None:
    for i in range(len(outputs)):
        for j in range(i):
            assert outputs[i] != outputs[j], f"outputs {j} and {i} are equal: a stream was shared"


def messages(params, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.uniform(-1, 1, params.slots) for _ in range(count)]


# ---- the attack of the issue ------------------------------------------------------------------------


@SEEDS
@pytest.mark.parametrize("key_kind", ["secret", "public"])
def test_children_encryptions_do_not_cancel(params, key_kind, seed):
    """Two children encrypt different messages: ``c0 - c0'`` must not decode to ``m - m'``."""
    keygen = KeyGenerator(params)
    key = keygen.secret_key if key_kind == "secret" else keygen.public_key()
    encoder = Encoder(params)
    encryptor = Encryptor(params, key, seed=seed)
    ms = messages(params, 3)

    blobs = in_children(lambda i: serialize.dump(encryptor.encrypt(encoder.encode(ms[i]))))
    parent_blob = serialize.dump(encryptor.encrypt(encoder.encode(ms[2])))
    cts = [serialize.load(b, params) for b in blobs + [parent_blob]]

    ring = params.ring_q
    for i, j in [(0, 1), (0, 2)]:  # child against child, child against parent
        a, b = cts[i], cts[j]
        got = encoder.decode(Plaintext(ring.sub(a.data[0], b.data[0]), a.scale, a.slots, params.fingerprint))
        pt_diff = ring.sub(encoder.encode(ms[i]).poly, encoder.encode(ms[j]).poly)
        want = encoder.decode(Plaintext(pt_diff, a.scale, a.slots, params.fingerprint))
        to_plaintexts = float(np.max(np.abs(got - want)))
        to_values = float(np.max(np.abs(got - (ms[i] - ms[j]))))
        print(f"\n{key_kind} key, {'fixed' if seed else 'OS'} seed, ciphertexts {i} and {j}: max |decode(c0 - c0') - "
              f"decode(pt - pt')| = {to_plaintexts:.3g}, max |decode(c0 - c0') - (m - m')| = {to_values:.3g}")
        assert to_plaintexts > 1.0 and to_values > 1.0, \
            f"c0 - c0' decodes to m - m' (to {to_values:.2g}): the encryption randomness was shared"

    assert_all_different(blobs + [parent_blob])
    if key_kind == "secret":  # fresh c1 seeds, not a shared one
        assert_all_different([ct.c1_seed for ct in cts])
    decryptor = Decryptor(params, keygen.secret_key)
    for ct, m in zip(cts, ms):  # each is still a correct encryption
        np.testing.assert_allclose(encoder.decode(decryptor.decrypt(ct)).real, m, atol=1e-4)


# ---- every other secret stream -------------------------------------------------------------------------


@SEEDS
def test_children_generate_different_keys(params, seed):
    keygen = KeyGenerator(params, seed=seed)

    def fresh_keys(_):
        return (serialize.dump(keygen.public_key()), serialize.dump(keygen.relin_key()),
                serialize.dump(keygen.galois_key(5)), serialize.dump(keygen.encapsulation_keys(8)))

    outputs = in_children(fresh_keys) + [fresh_keys(None)]
    for kind in range(4):
        assert_all_different([out[kind] for out in outputs])


def test_a_fixed_key_seed_is_reproducible_in_one_process(params):
    first = KeyGenerator(params, seed=FIXED_SEED)
    second = KeyGenerator(params, seed=FIXED_SEED)
    np.testing.assert_array_equal(first.secret_key.coeffs, second.secret_key.coeffs)
    assert serialize.dump(first.public_key()) == serialize.dump(second.public_key())
    assert serialize.dump(first.relin_key()) == serialize.dump(second.relin_key())


@SEEDS
def test_children_flood_differently(params, seed):
    keygen = KeyGenerator(params)
    encoder = Encoder(params)
    ct = Encryptor(params, keygen.secret_key).encrypt(encoder.encode(messages(params, 1)[0]))
    decryptor = Decryptor(params, keygen.secret_key, seed=seed)

    def flooded(_):
        return decryptor.decrypt(ct, flooding_bits=20).poly.tobytes()

    outputs = in_children(flooded) + [flooded(None)]
    assert_all_different(outputs)
    # Same ciphertext: two flooded results with the same noise would cancel it,
    # exposing the exact decryption noise; here their difference is the noise.
    exact = decryptor.decrypt(ct).poly
    for out in outputs:
        assert not np.array_equal(np.frombuffer(out, dtype=np.uint64).reshape(exact.shape), exact)


def test_children_fork_again(params):
    """A child that forks a grandchild before reading: all three differ."""
    encryptor = Encryptor(params, KeyGenerator(params).secret_key)
    pt = Encoder(params).encode([0.5])

    def child(_):
        grandchild = in_children(lambda _: serialize.dump(encryptor.encrypt(pt)), count=1)
        return grandchild + [serialize.dump(encryptor.encrypt(pt))]

    outputs = [blob for pair in in_children(child) for blob in pair] + [serialize.dump(encryptor.encrypt(pt))]
    assert_all_different(outputs)


def _send_encryption(queue, encryptor, pt) -> None:
    queue.put(serialize.dump(encryptor.encrypt(pt)))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="no fork start method")
def test_multiprocessing_fork_workers_encrypt_differently(params):
    """The same through ``multiprocessing`` with the ``fork`` start method."""
    ctx = mp.get_context("fork")
    encryptor = Encryptor(params, KeyGenerator(params).secret_key, seed=FIXED_SEED)
    pt = Encoder(params).encode([0.25, -0.5])
    queue = ctx.Queue()
    workers = [ctx.Process(target=_send_encryption, args=(queue, encryptor, pt)) for _ in range(2)]
    for w in workers:
        w.start()
    outputs = [queue.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert_all_different(outputs + [serialize.dump(encryptor.encrypt(pt))])


# ---- the stream itself -------------------------------------------------------------------------------


def test_secret_stream_reseeds_in_a_child_only(params):
    stream = SecretStream(FIXED_SEED, b"test.fork")
    reference = Shake256Stream(FIXED_SEED, b"test.fork")
    assert stream.read(100) == reference.read(100)  # bit-identical before any fork

    outputs = in_children(lambda _: stream.read(64))
    parent_next = stream.read(64)
    assert parent_next == reference.read(64)  # the parent's stream is untouched by the fork
    assert_all_different(outputs + [parent_next])


def test_copied_secret_stream_reseeds():
    import copy

    stream = SecretStream(FIXED_SEED, b"test.copy")
    clone, thawed = copy.deepcopy(stream), pickle.loads(pickle.dumps(stream))
    assert_all_different([stream.read(64), clone.read(64), thawed.read(64)])


# ---- public seeds stay deterministic -------------------------------------------------------------------


def test_public_seed_expansion_is_identical_in_parent_and_child(params):
    keygen = KeyGenerator(params)
    pk_blob = serialize.dump(keygen.public_key())
    swk_blob = serialize.dump(keygen.relin_key())
    ct_blob = serialize.dump(Encryptor(params, keygen.secret_key).encrypt(Encoder(params).encode([1.0])))
    seed = bytes(range(100, 132))

    def expand(_):
        # Loaded here, so that every uniform half is expanded from its seed in this process.
        pk, swk, ct = (serialize.load(b, params) for b in (pk_blob, swk_blob, ct_blob))
        return (pk.a.tobytes(), swk.a.tobytes(), ct.data[1].tobytes(),
                params.ring_q.sample_uniform(seed).tobytes(), Shake256Stream(seed, b"test.public").read(256))

    outputs = in_children(expand) + [expand(None)]
    assert outputs[0] == outputs[1] == outputs[2]
