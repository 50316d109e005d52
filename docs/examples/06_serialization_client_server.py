"""Example 06: serialization and the client/server split.

Builds on 05.  The client owns the secret key.  Everything that crosses to the
server is bytes in the versioned format of fhe_ckks.serialize: parameters,
the public evaluation keys, ciphertexts.  The server rebuilds an Evaluator
from those bytes alone; it cannot decrypt, because it never has the secret
key.  The client decrypts the result with noise flooding, as any decryption
whose value may reach another party should be.

Run:  python docs/examples/06_serialization_client_server.py [--toy]      (docs/ckks.md)
"""

from __future__ import annotations

import argparse

import numpy as np

from fhe_ckks import Decryptor, Encoder, Encryptor, Evaluator, KeyGenerator, presets, serialize
from fhe_ckks.ckks import precision_bits
from fhe_ckks.errors import SerializationError


def section(title: str) -> None:
    print(f"\n== {title} ==")


def client_setup(name: str, allow_insecure: bool):
    params = presets.get(name, allow_insecure=allow_insecure)
    keygen = KeyGenerator(params)
    wire = {
        "params": serialize.dump(params),
        "relin": serialize.dump(keygen.relin_key()),
        "galois": serialize.dump(keygen.galois_keys([1, 2, 4])),
    }
    return params, keygen, wire


def server(wire: dict[str, bytes], allow_insecure: bool) -> bytes:
    params = serialize.load(wire["params"], allow_insecure=allow_insecure)
    evaluator = Evaluator(params, serialize.load(wire["relin"], params), serialize.load(wire["galois"], params))
    ct = serialize.load(wire["query"], params)
    # The server computes sum_{i<8} x_i^2 into slot 0, without seeing x.
    squares = evaluator.rescale(evaluator.square(ct))
    return serialize.dump(evaluator.rotate_and_sum(squares, 8))


def main(toy: bool) -> None:
    name = "INSECURE_N10_QP380_L5_S40" if toy else "N14_QP430_L7_S40"
    params, keygen, wire = client_setup(name, allow_insecure=toy)

    section("1. Client: keys and an encrypted query")
    x = np.random.default_rng(6).uniform(-1, 1, 8)
    ct = Encryptor(params, keygen.secret_key).encrypt(Encoder(params).encode(x, slots=8))
    wire["query"] = serialize.dump(ct)
    for k, v in wire.items():
        print(f"to the server: {k:<7} {len(v) / 2**20:8.3f} MiB")

    section("2. Server: evaluation keys and ciphertexts only")
    answer = server(wire, allow_insecure=toy)
    print(f"answer: {len(answer) / 2**20:.3f} MiB")

    section("3. Client: flooded decryption")
    result = serialize.load(answer, params)
    pt = Decryptor(params, keygen.secret_key).decrypt(result, flooding_bits=16)
    got = Encoder(params).decode(pt)[0].real
    print(f"sum of squares: {got:.6f} (exact {np.sum(x * x):.6f}, "
          f"{precision_bits(np.sum(x * x), got):.1f} bits after flooding)")

    section("4. Tampering is detected")
    bad = bytearray(answer)
    bad[len(bad) // 2] ^= 1
    try:
        serialize.load(bytes(bad), params)
    except SerializationError as exc:
        print("corrupted answer refused:", exc)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", action="store_true", help="small insecure parameters (used by the tests)")
    main(parser.parse_args().toy)
