"""benchmarks/bench_junk.py: the junk corpus (deterministic, each group what its name says) and the record of a
small run on the toy model (counts add up, rates are rates, the rules are the model's: the old polynomial one,
the exact one, and the deployed cosine rule), plus the HerPN spy on the shipped model (Hardening, section 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cryptoface import DEFAULT_MODEL
from cryptoface.model import decisions, exact_decisions, load_model, save_model

from tests.benchmarks.scripts import load_benchmark

from tests.cryptoface.toy_model import toy_model


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_junk")


@pytest.fixture(scope="module")
def sample(bench):
    return bench.load_sample()


@pytest.fixture(scope="module")
def corpus(bench, sample):
    return {g.name: g for g in bench.build_corpus(sample, "small", seed=3, celeba=None, lfw=None)}


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
    """The toy model with its rule fitted on the shipped sample, as bench_cryptoface fits one."""
    model = load_benchmark("bench_cryptoface").with_sample_thresholds(toy_model())
    return save_model(model, tmp_path_factory.mktemp("model") / "toy.model.npz")


@pytest.fixture(scope="module")
def record(bench, toy_file):
    args = bench.parse_args(["--model", str(toy_file), "--size", "small", "--seed", "3", "--no-progress"])
    return bench.run(args)


def test_sample_faces(sample):
    assert len(sample.pairs) == 40 and len(sample.identities) == len(sample.names) == 80
    assert len(sample.distinct) == len(set(sample.names)) == 78
    raw = {bytes(sample.pairs.sources[i]) for i in sample.distinct}
    assert len(raw) == 78                      # distinct by name is distinct by bytes


def test_corpus_is_deterministic_given_the_seed(bench, sample, corpus):
    again = bench.build_corpus(sample, "small", seed=3, celeba=None, lfw=None)
    assert [g.name for g in again] == list(corpus)
    for g in again:
        assert g.names == corpus[g.name].names and g.identities == corpus[g.name].identities
        assert all(np.array_equal(a, b) for a, b in zip(g.images, corpus[g.name].images))
    other = {g.name: g for g in bench.build_corpus(sample, "small", seed=4, celeba=None, lfw=None)}
    assert not np.array_equal(other["noise_uniform"].images[0], corpus["noise_uniform"].images[0])
    assert all(np.array_equal(a, b) for a, b in zip(other["checkerboard"].images, corpus["checkerboard"].images))


def test_every_image_is_an_aligned_8bit_crop(corpus):
    for g in corpus.values():
        assert len(g) > 0 and len(g.names) == len(g.identities) == len(g)
        assert len(set(g.names)) == len(g) and all(n.startswith(g.name + "/") for n in g.names)
        for im in g.images:
            assert im.shape == (112, 112, 3) and im.dtype == np.uint8


def test_groups_are_what_their_names_say(corpus):
    for im in corpus["noise_uniform"].images:            # i.i.d. uniform bytes: flat histogram, no correlation
        x = im.astype(np.float64)
        assert abs(x.mean() - 127.5) < 3 and abs(x.std() - 73.9) < 2
        assert abs(np.corrcoef(x[:, :-1].ravel(), x[:, 1:].ravel())[0, 1]) < 0.05
        assert len(np.unique(im)) == 256
    for im in corpus["constant"].images:
        assert (im == im[0, 0]).all()
    names = corpus["constant"].names
    assert {"constant/black", "constant/white"} <= set(names)
    assert (corpus["constant"].images[names.index("constant/black")] == 0).all()
    for g, axis in (("stripes_vertical", 0), ("stripes_horizontal", 1)):
        for name, im in zip(corpus[g].names, corpus[g].images):
            width = int(name.split("/")[1][1:])
            assert (np.diff(im.astype(int), axis=axis) == 0).all()          # constant along the stripes
            line = im[0, :, 0] if axis == 0 else im[:, 0, 0]
            assert len(np.unique(line)) == 2 and (line[:width] == line[0]).all() and line[width] != line[0]
    for name, im in zip(corpus["checkerboard"].names, corpus["checkerboard"].images):
        w = int(name.split("/")[1][1:])
        assert im[0, 0, 0] != im[0, w, 0] and im[0, 0, 0] != im[w, 0, 0] and im[0, 0, 0] == im[w, w, 0]


def test_damaged_faces_keep_their_person(corpus, sample):
    people = set(sample.identities)
    for name in ("faces_scaled", "faces_contrast", "faces_inverted", "faces_blurred", "faces_shuffled",
                 "faces_noisy"):
        g = corpus[name]
        assert all(ident in people for ident in g.identities)
        assert all(n.split("/")[-1] in sample.names for n in g.names)
    for name in ("noise_uniform", "constant", "stripes_vertical", "checkerboard", "gradient"):
        assert set(corpus[name].identities) == {None}
    shuffled = corpus["faces_shuffled"].images[0]
    base = corpus["faces_shuffled"].names[0].split("/")[-1]
    face = sample.pairs.raw_image(sample.names.index(base))
    assert not np.array_equal(shuffled, face) and np.array_equal(np.sort(shuffled, None), np.sort(face, None))


def test_record_counts_add_up(bench, record, corpus, sample):
    faces = record["real"]["distinct_faces"]
    assert faces == 78
    groups = record["groups"]
    assert list(groups)[:len(corpus)] == list(corpus)    # same seed, same groups; then the other sets if here
    assert set(list(groups)[len(corpus):]) == {name for name, root in (("celeba", bench.DEFAULT_CELEBA),
                                                                       ("lfw_other_people", bench.DEFAULT_LFW))
                                               if root.is_dir()}
    face_ids = [sample.identities[i] for i in sample.distinct]
    for name, g in groups.items():
        if name in corpus:                               # each image meets every face but its own person's
            assert g["images"] == len(corpus[name])
            assert g["comparisons"] == sum(ident != f for ident in corpus[name].identities for f in face_ids)
        assert (g["kind"] == "reference") == (name == "lfw_other_people")
        for rule in ("poly", "exact", "cosine"):
            assert 0 <= g[f"accepts_{rule}"] <= g["comparisons"]
            assert g[f"rate_{rule}"] == pytest.approx(g[f"accepts_{rule}"] / g["comparisons"])
            assert 0 <= g[f"rate_{rule}"] <= 1
            assert g[f"images_accepted_{rule}"] <= g["images"]
            assert g[f"accepts_{rule}_over_range"] <= g[f"accepts_{rule}"]
            assert g[f"accepts_{rule}_checked"] <= g[f"accepts_{rule}"]      # a refused probe is never compared
        # the honest client refuses every non-finite embedding (and norms beyond the hint range, with a slack)
        assert g["refused_by_client"] >= g["non_finite"]
        assert g["refused_by_client"] <= g["images"]
        assert g["non_finite"] + g["below_lo"] + g["above_hi"] <= g["images"]
        assert sum(w["accepts_poly"] for w in g["most_accepted"]) <= g["accepts_poly"]
    total = record["junk_total"]
    for key in ("images", "comparisons", "accepts_poly", "accepts_exact", "accepts_cosine", "non_finite", "below_lo",
                "above_hi", "refused_by_client", "accepts_poly_checked", "accepts_exact_checked",
                "accepts_cosine_checked"):
        assert total[key] == sum(g[key] for g in groups.values() if g["kind"] == "junk")
    assert total["rate_poly"] == pytest.approx(total["accepts_poly"] / total["comparisons"])
    real = record["real"]
    assert real["genuine_pairs"]["comparisons"] + real["impostor_pairs"]["comparisons"] == 40
    assert real["genuine_all"]["comparisons"] + real["impostor_all"]["comparisons"] == faces * (faces - 1) // 2
    t = record["targets"]
    for name, rule, rate in (("deployed", "cosine", "rate_cosine_checked"), ("before", "poly", "rate_poly")):
        tt = t[name]
        assert tt["junk_rate"] == total[rate]
        assert tt["met"] == (tt["junk_rate_le_exact"] and not tt["groups_above_real_impostor_rate"])
        assert tt["real_impostor_rate"] == real["impostor_all"][f"rate_{rule}"]
        assert tt["junk_rate_le_exact"] == (total[rate] <= total["rate_exact"])
    assert t["met"] == t["deployed"]["met"]


def test_rules_are_the_models(bench, record, toy_file, sample):
    model = load_model(toy_file)
    tau, poly = model.thresholds["lfw"].for_fold(None)
    assert record["rules"]["poly_tau"] == tau and record["rules"]["poly_norm"] == poly.as_dict()
    emb, peaks = bench.embed(model, [sample.pairs.raw_image(i) for i in range(80)])
    assert np.array_equal(emb, model.embed(sample.pairs.images(model.input_size)))   # the spy changes nothing
    assert (peaks > 0).all()
    rules = bench.fit_rules(model, sample.pairs, emb, None)
    assert rules.tau_exact == record["rules"]["exact_tau"]
    assert rules.cos_threshold == model.thresholds["lfw"].cosine_for_fold(None) == record["rules"]["cos_threshold"]
    ours = rules.accept(emb[0::2], emb[1::2])["poly"]
    assert np.array_equal(ours, decisions(model, emb[0::2], emb[1::2], "lfw", [None] * 40))
    assert np.array_equal(rules.accept(emb[0::2], emb[1::2])["cosine"],
                          exact_decisions(model, emb[0::2], emb[1::2], "lfw", [None] * 40))
    same = sample.pairs.issame
    assert record["real"]["genuine_pairs"]["accepts_poly"] == int(ours[same].sum())
    d = np.array(sample.distinct)                        # all pairs of distinct faces, decided by the model's code
    i, k = np.triu_indices(len(d), 1)
    theirs = decisions(model, emb[d[i]], emb[d[k]], "lfw", [None] * len(i))
    assert np.array_equal(rules.accept(emb[d[i]], emb[d[k]])["poly"], theirs)
    other = np.array(sample.identities)[d[i]] != np.array(sample.identities)[d[k]]
    assert record["real"]["impostor_all"]["accepts_poly"] == int(theirs[other].sum()) > 0
    # junk that overflows matches nothing, under any rule
    blown = np.full((3, emb.shape[1]), np.inf)
    blown[1] = np.nan
    blown[2] = 1e200
    assert not any(r.any() for r in rules.accept(blown[:2], emb[:2]).values())


def test_json_output_and_bad_input(bench, toy_file, tmp_path, capsys):
    assert bench.main(["--model", str(tmp_path / "missing.npz"), "--size", "small", "--no-progress"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert bench.main(["--model", str(toy_file), "--size", "small", "--no-progress", "--fold", "3",
                       "--celeba", "none", "--lfw", "none"]) == 2
    assert "--fold 3" in capsys.readouterr().err
    assert bench.main(["--model", str(toy_file), "--size", "small", "--no-progress", "--json", "--fold", "7",
                       "--celeba", "none", "--lfw", "none"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["benchmark"] == "junk" and rec["rules"]["fold"] == 7 and "machine" in rec
    assert bench.main(["--model", str(toy_file), "--size", "small", "--no-progress", "--celeba", "none",
                       "--lfw", "none"]) == 0
    out = capsys.readouterr().out
    assert "junk total" in out and "sample impostor all" in out and "FAR poly / exact / cosine" in out


def test_herpn_peaks_of_the_shipped_model(bench, sample):
    """The spy measures what the model file records: the sample's faces (among the pairs the range was taken
    on) stay within the recorded maximum, and 8-bit stripes, far from any face, go far beyond it."""
    model = load_model(DEFAULT_MODEL)
    faces = [sample.pairs.raw_image(i) for i in sample.distinct[:4]]
    stripes = np.zeros_like(faces[0])
    stripes[:, ::4] = 255
    _, peaks = bench.embed(model, faces + [stripes])
    top = model.info["activation_range"]["max"]
    assert (peaks[:4] > 1).all() and (peaks[:4] <= top * 1.001).all()
    assert not peaks[4] <= 10 * top                     # (an overflow to inf or NaN counts too)


def test_other_sets_are_other_people(bench, sample):
    groups = {g.name: g for g in bench.build_corpus(sample, "small", seed=3)}
    if "celeba" not in groups and "lfw_other_people" not in groups:
        pytest.skip("no shared face sets here")
    for name in ("celeba", "lfw_other_people"):
        if name in groups:
            g = groups[name]
            assert len(g) == bench.SIZES["small"][name.split("_")[0]] and len(set(g.identities)) == len(g)
            assert not set(g.identities) & set(sample.identities)


def test_the_rules_are_the_shipped_models_decisions(bench):
    """Rules.accept decides as cryptoface.model.decisions and exact_decisions, on embeddings spread around the
    thresholds."""
    model = load_model(DEFAULT_MODEL)
    tau, poly = model.thresholds["lfw"].for_fold(None)
    rng = np.random.default_rng(0)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    a, n = unit(rng.normal(size=(2000, 256))), unit(rng.normal(size=(2000, 256)))
    w = rng.uniform(0, 0.6, (2000, 1))
    b = unit(w * a + (1 - w) * n)
    a = a * np.sqrt(rng.uniform(poly.lo, poly.hi, (2000, 1)))
    b = b * np.sqrt(rng.uniform(poly.lo, poly.hi, (2000, 1)))
    c = model.thresholds["lfw"].cosine_for_fold(None)
    got = bench.Rules(tau, poly, 1.4, None, c).accept(a, b)
    theirs = decisions(model, a, b, "lfw", [None] * 2000)
    assert 0.1 < theirs.mean() < 0.9 and np.array_equal(got["poly"], theirs)
    assert np.array_equal(got["exact"], np.sum((unit(a) - unit(b)) ** 2, axis=1) < 1.4)
    cosine = exact_decisions(model, a, b, "lfw", [None] * 2000)
    assert 0.1 < cosine.mean() < 0.9 and np.array_equal(got["cosine"], cosine)
