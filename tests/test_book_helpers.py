"""kdlib.book.toy: the quadratic bilevel problem behind the Theorem 1 page."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kdlib.book import toy


def test_exact_optimum_matches_grid_and_brute_force():
    p = toy.make_problem(dim=6, hessian_spread=0.3, seed=1)
    opt = p.optimum()
    grid = p.grid_optimum((-4, -4), (4, 4), n=321)
    assert np.linalg.norm(opt - grid) < 0.05
    # optimality: the gradient of the outer objective vanishes (finite differences)
    eps = 1e-5
    g = [(p.val_loss(opt + eps * e) - p.val_loss(opt - eps * e)) / (2 * eps) for e in np.eye(2)]
    assert np.abs(g).max() < 1e-6


def test_inner_solution_is_stationary():
    p = toy.make_problem(dim=5, hessian_spread=0.5, seed=2)
    lam = np.array([0.3, -1.2])
    w = p.inner_solution(lam)
    assert np.allclose(p.H @ w - p.B @ lam - p.c, 0, atol=1e-10)


def test_hypergradient_matches_finite_difference():
    p = toy.make_problem(dim=5, hessian_spread=0.4, seed=3)
    w = np.random.default_rng(0).normal(size=5)
    lam = np.array([0.5, 0.7])
    lr = 0.3

    def outer(l):
        return float(p.val_loss_w(w - lr * (p.H @ w - p.B @ l - p.c)))

    eps = 1e-6
    fd = np.array([(outer(lam + eps * e) - outer(lam - eps * e)) / (2 * eps) for e in np.eye(2)])
    assert np.allclose(p.hypergradient(w, lam, lr), fd, atol=1e-6)


@pytest.mark.parametrize("spread", [0.0, 0.5])
def test_greedy_converges_to_its_fixed_point(spread):
    p = toy.make_problem(dim=8, hessian_spread=spread, seed=0)
    run = p.greedy(np.array([2.0, -2.0]), steps=20000, lr=0.5, meta_lr=1.0)
    assert np.linalg.norm(run["lam"][-1] - p.greedy_fixed_point()) < 1e-6
    dist = np.linalg.norm(run["lam"][-1] - p.optimum())
    if spread == 0.0:
        assert dist < 1e-6  # Theorem 1: H = I, the greedy method is exact
    else:
        assert dist > 1e-3  # H far from I: it stops elsewhere
    assert run["lam"].shape == (20001, 2) and run["hypergrad"].shape == (20000, 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive definite"):
        toy.make_problem(hessian_spread=1.0)
    with pytest.raises(ValueError):
        toy.make_problem(dim=1)


def test_extrapolation_error_small_for_linear_path():
    pytest.importorskip("kdlib.trajectory")
    hist = np.stack([np.arange(100) * 0.1, 3.0 - np.arange(100) * 0.02], axis=1)
    errs = toy.extrapolation_errors(hist, start=5, e1=10, e2_values=[10, 50])
    assert max(errs) < 1e-8
    curved = np.stack([np.arange(100) ** 2 * 1e-3, np.zeros(100)], axis=1)
    e = toy.extrapolation_errors(curved, start=0, e1=10, e2_values=[10, 80])
    assert e[1] > e[0] > 0


# ------------------------------------------------------------------------------------------ page and plots

def test_banner_and_teacher_table_show_no_absolute_path(tmp_path, monkeypatch):
    from kdlib.book import page

    monkeypatch.setenv("KDLIB_DATA", str(tmp_path))
    src = f"real: {tmp_path}/cifar10"
    text = page.banner("smoke", "cpu", [0], "2 epochs", src, 1.0)
    assert str(tmp_path) not in text and "[data root]/cifar10" in text
    t = page.teacher_table(dict(name="authors_resnet", source=f"authors' logits ({tmp_path}/authors/x.npy)",
                                test_accuracy=None, train_agreement=0.9995))
    assert str(tmp_path) not in t.to_string() and "[data root]/authors/x.npy" in t.loc[0, "source"]
    assert t.loc[0, "teacher"] == "the authors' PreAct-ResNet18 (their published logits)"
    assert t.loc[0, "test accuracy"] == "not recorded" and t.loc[0, "agreement with the training labels"] == "0.9995"
    assert page.source_text("/elsewhere/data/fmnist") == "fmnist"


def test_plots_use_display_labels_and_give_the_authors_their_own_axis():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from kdlib.book import plots

    ours = pd.DataFrame(dict(method=["gradient"] * 4, seed=[0, 0, 1, 1], epoch=[0, 1, 0, 1],
                             test_accuracy=[0.3, 0.4, 0.35, 0.45], lambda1=[0.5] * 4, temperature=[1.0] * 4))
    theirs = pd.DataFrame(dict(method=["gradient"] * 3, run=[0] * 3, step=[0, 24, 49], accuracy=[0.3, 0.5, 0.6],
                               lambda1=[0.4] * 3, temperature=[2.0] * 3))
    ax = plots.accuracy_curves(ours, x="epoch", authors=theirs, xlabel="epoch")
    tops = [a for a in ax.figure.axes if a is not ax]
    assert len(tops) == 1 and tops[0].get_xlim()[1] >= 49 > ax.get_xlim()[1]  # their 50 epochs on their own axis
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Gradient-based" in labels and "Gradient-based (authors' logs)" in labels
    assert not any("gradient" == lab or "_" in lab for lab in labels)
    # the same length: one shared axis
    same = theirs.assign(step=[0, 1, 1])
    ax2 = plots.accuracy_curves(ours, x="epoch", authors=same, xlabel="epoch")
    assert len(ax2.figure.axes) == 1


def test_extrapolation_error_ylabel_names_the_plotted_column():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from kdlib.book import plots

    df = pd.DataFrame(dict(case=["a", "a"], e2=[10, 20], max_error=[0.1, 0.2], relative_error=[0.01, 0.02]))
    assert "distance travelled" in plots.extrapolation_error(df, y="relative_error").get_ylabel()
    assert "distance travelled" not in plots.extrapolation_error(df, y="max_error").get_ylabel()


def _tiny_reduced_logs(tmp_path, monkeypatch):
    """The authors' reduced CIFAR-10 logs, two tuned runs (one per branch) and one run of each baseline, in a
    data root that KDLIB_DATA points at."""
    from test_analysis import _authors_log

    logs = tmp_path / "data" / "authors" / "logs"
    logs.mkdir(parents=True)
    _authors_log(logs / "exp33_opt.jsonl", [(8.06, 0.57, 10.0, 1.0, 0.607), (0.36, 0.0, 0.43, 0.0, 0.535)])
    _authors_log(logs / "exp33_splines.jsonl", [(8.0, 0.6, 9.0, 1.087, 0.60), (0.4, 0.0, 0.6, 0.0, 0.53)])
    for name in ("nodistil", "distil", "random", "hyperopt"):
        _authors_log(logs / f"exp33_{name}.jsonl", [(1.0, 0.5, 1.0, 0.5, 0.55)])
    monkeypatch.setenv("KDLIB_DATA", str(tmp_path / "data"))
    return logs


def test_archive_section_renders_with_records_and_when_empty(tmp_path, monkeypatch):
    """The reduced CIFAR-10 page's archive section, on tiny records and logs: with records it shows the run-by-run
    table; empty, it says so and still shows the authors' runs."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    from test_analysis import _record

    from kdlib.book import archive_page

    _tiny_reduced_logs(tmp_path, monkeypatch)
    shown = []
    monkeypatch.setattr(archive_page, "show_markdown", lambda text: shown.append(text))
    monkeypatch.setattr(archive_page, "show_table", lambda df, **kw: shown.append(df))

    monkeypatch.setenv("KDLIB_ARCHIVE", str(tmp_path / "empty"))
    out = archive_page.show_archive("cifar10_reduced")
    assert "archive is empty" in shown[0] and len(out["theirs"]) == 4 and "comparison" not in out
    assert archive_page.archive_columns("cifar10_reduced") == {}

    root = tmp_path / "archive"
    d = root / "cifar10_reduced" / "authors" / "runs"
    d.mkdir(parents=True)
    for r in (_record("gradient", 0, [0.56, 1.0], [8.07, 10.0], [0.38, 0.595]),
              _record("gradient", 1, [0.3, 0.6], [0.37, 0.43], [0.30, 0.532]),
              _record("proposed", 0, [0.5, 1.0], [8.0, 10.0], [0.38, 0.6])):
        (d / f"cifar10_reduced__{r['config']['method']}__seed{r['config']['seed']}.json").write_text(json.dumps(r))
    monkeypatch.setenv("KDLIB_ARCHIVE", str(root))
    shown.clear()
    out = archive_page.show_archive("cifar10_reduced")
    assert "3 records in `[archive]/cifar10_reduced/authors/runs`" in shown[0]
    assert any(isinstance(t, str) and t.startswith("The authors' protocol column has no ") and t.endswith(
        "Hyperopt runs yet.") and "Gradient" not in t for t in shown)
    comp = out["comparison"].set_index(["method", "run"])
    assert comp.loc[("gradient", 0), "same_branch"] and not comp.loc[("gradient", 1), "same_branch"]
    cols = archive_page.archive_columns("cifar10_reduced")
    assert list(cols) == ["paper protocol, authors' protocol (archive)",
                          "paper protocol, authors' protocol (archive): runs"]
    assert cols["paper protocol, authors' protocol (archive)"]["gradient"].startswith("0.5635 (0.5950)")
    runs = cols["paper protocol, authors' protocol (archive): runs"]
    assert runs["gradient"] == 2 and runs["proposed"] == 1 and runs["naive"] == 0


def test_a_column_in_progress_is_shown_as_such_with_its_verdict(tmp_path, monkeypatch):
    """A column still being computed (archive/pending/...) is shown at every profile, labelled in progress with
    the runs it holds; the page's generated verdict sets each method's mean beside the authors' and counts the
    runs on the authors' branch; the summary's paper-protocol Table 2 reads it too."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    from test_analysis import _record

    from kdlib.book import archive_page, image_page, summary_page
    from kdlib.experiments import protocol as P

    _tiny_reduced_logs(tmp_path, monkeypatch)
    root = tmp_path / "archive"
    d = P.pending_dir("cifar10_reduced", "authors", root)
    d.mkdir(parents=True)
    for r in (_record("gradient", 0, [0.56, 1.0], [8.07, 10.0], [0.38, 0.595]),
              _record("gradient", 1, [0.0, 0.0], [0.37, 0.43], [0.30, 0.532]),
              _record("no_distillation", 0, [0.0, 0.0], [1.0, 1.0], [0.3, 0.50])):
        (d / f"cifar10_reduced__{r['config']['method']}__seed{r['config']['seed']}.json").write_text(json.dumps(r))
    monkeypatch.setenv("KDLIB_ARCHIVE", str(root))
    shown = []
    for mod in (archive_page, image_page, summary_page):
        monkeypatch.setattr(mod, "show_markdown", lambda text: shown.append(text))
        monkeypatch.setattr(mod, "show_table", lambda df, **kw: shown.append(df))
    out = archive_page.show_archive("cifar10_reduced")
    assert any(isinstance(s, str) and s.startswith("**In progress.**") and "3 of its runs" in s for s in shown)
    assert "3 records in `[archive]/pending/cifar10_reduced/authors/runs`" in shown[0]  # where they are
    assert list(archive_page.archive_columns("cifar10_reduced"))[0] == \
        "paper protocol, authors' protocol (archive, in progress)"
    page = image_page.ImagePage("cifar10_reduced", "smoke", seeds=[0])
    lines = page.paper_verdict(out)
    assert "Gradient-based 0.5635 over 2 run(s) against the authors' 0.5710 (-0.0075, within 0.015)" in lines[0]
    assert lines[1].startswith("- Gradient-based minus no distillation, authors' protocol: +0.0635 (2 and 1 runs)")
    assert "2 of 2 runs end on the branch of the authors' run" in lines[-1]
    finals = summary_page.SummaryPage("smoke").paper_protocol_finals()
    red = finals[finals.dataset == "cifar10_reduced"]
    assert len(red) == 3 and set(red.source) == {"archive, in progress"}


def test_summary_findings_lead_with_the_paper_protocol(tmp_path, monkeypatch):
    """The summary's "What we saw" puts the archived paper-protocol findings (gain, methods within tolerance,
    runs on the authors' branch, the proposed method's saving counted from the archive) before the findings of
    the build's own profile; a method outside the tolerance is named with its difference."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    from test_analysis import _record

    from kdlib.book import summary_page
    from kdlib.experiments import protocol as P

    from test_analysis import _authors_log

    from kdlib.analysis import authors_logs

    logs = _tiny_reduced_logs(tmp_path, monkeypatch)
    for name in authors_logs.table2_file_names():  # a whole logs folder, as on a real data root
        if not (logs / name).exists():
            _authors_log(logs / name, [(1.0, 0.5, 1.0, 0.5, 0.5)])
    root = tmp_path / "archive"
    d = P.archive_dir("cifar10_reduced", "authors", root)
    d.mkdir(parents=True)
    recs = [_record("gradient", 0, [0.56, 1.0], [8.07, 10.0], [0.38, 0.60]),
            _record("gradient", 1, [0.0, 0.0], [0.37, 0.43], [0.30, 0.54]),
            _record("proposed", 0, [0.56, 1.0], [8.0, 9.0], [0.38, 0.59]),
            _record("proposed", 1, [0.0, 0.9], [0.4, 2.0], [0.30, 0.53]),
            _record("no_distillation", 0, [0.0, 0.0], [1.0, 1.0], [0.3, 0.50])]
    for r, evals, wall in zip(recs, (100, 100, 40, 40, 0), (300.0, 330.0, 200.0, 210.0, 100.0)):
        r["summary"].update(hypergrad_evals=evals, full_trainings=1, wall_time=wall)
        (d / f"cifar10_reduced__{r['config']['method']}__seed{r['config']['seed']}.json").write_text(json.dumps(r))
    monkeypatch.setenv("KDLIB_ARCHIVE", str(root))
    shown = []
    monkeypatch.setattr(summary_page, "show_markdown", lambda text: shown.append(text))
    monkeypatch.setattr(summary_page, "show_table", lambda df, **kw: shown.append(df))
    page = summary_page.SummaryPage("smoke")
    page._missing = []  # this build's own runs at its profile: two, given here
    page.results = pd.DataFrame(dict(dataset="cifar10_reduced", method=["gradient", "no_distillation"], seed=0,
                                     step=10, test_accuracy=[0.41, 0.40], hypergrad_evals=[10, 0]))
    page.paper_table2()
    costs = page.paper_cost().set_index("method")
    assert costs.loc["proposed", "saving_vs_gradient_evals"] == pytest.approx(0.6)
    assert costs.loc["gradient", "wall_time_s"] == pytest.approx(315.0)
    lines = page.what_we_saw()
    assert lines[0] == "**At the paper's protocol**"
    text = "\n".join(lines)
    assert "- Reduced CIFAR-10: gradient-based minus no distillation +0.0700 (2 and 1 runs)" in text
    # authors: gradient 0.5710, proposed 0.5650, no distillation 0.55; ours 0.57, 0.56, 0.50 (off by -0.05)
    assert ("2 of 3 archived methods within 0.015 of the authors' mean (outside: Without distillation -0.0500 "
            "over 1 run)") in text
    assert "- Reduced CIFAR-10, Gradient-based: 2 of 2 runs end on the branch" in text
    assert "- Reduced CIFAR-10, Proposed: 1 of 2 runs end on the branch" in text
    assert "at the paper's protocol: the proposed method used 60% fewer hypergradient evaluations" in text
    assert "wall time (2 and 2 runs)." in text  # the run counts behind the saving
    assert lines.index("**At this build's profile (`smoke`)**") > lines.index("- The paper's column is regenerated "
                                                                         "from the authors' logs and matches the "
                                                                         "printed Table 2 to every printed digit.")
    assert "- Reduced CIFAR-10: best mean final accuracy **Gradient-based** (0.4100, 1 seeds)" in text


def test_recheck_record_reproduces_a_run_and_catches_a_stale_one():
    """The build-time guard: re-running the first logged points of a stored record gives the same values; a record
    whose accuracy was changed by 0.05 is caught."""
    import copy

    from kdlib.experiments.recheck import recheck_record
    from kdlib.experiments.profiles import resolve_config
    from kdlib.experiments.runner import run_one
    from kdlib.experiments.store import cpu_capability, cpu_model

    rec = run_one(resolve_config("synthetic", "gradient", "smoke", 0, variant="authors"))
    # this machine's kernels and CPU model: strict
    rec["provenance"] = dict(kdlib_version="test", cpu_capability=cpu_capability(), cpu_model=cpu_model())
    assert len(rec["history"]) >= 3
    table = recheck_record(rec, first_rows=2)
    assert set(table.step) == {rec["history"][0]["step"], rec["history"][1]["step"]}
    assert table.ok.all(), table
    stale = copy.deepcopy(rec)
    stale["history"][1]["test_accuracy"] += 0.05
    bad = recheck_record(stale, first_rows=2)
    assert bad.loc[(bad.field == "test_accuracy") & (bad.step == rec["history"][1]["step"]), "ok"].tolist() == [False]
    assert bad.loc[bad.field != "test_accuracy", "ok"].all()


def test_show_recheck_says_so_when_the_data_is_missing(tmp_path, monkeypatch):
    """Without the dataset on the machine the archive cannot be re-run: the page says so instead of failing
    (and with the data, a moved value still fails the page: test_recheck_record_reproduces_...)."""
    import json

    from kdlib.experiments.protocol import AUTHORS_PROTOCOL
    from kdlib.book.archive_page import show_recheck
    from kdlib.experiments.profiles import resolve_config

    cfg = resolve_config("cifar10_reduced", "gradient", "smoke", 0, **AUTHORS_PROTOCOL).to_dict()
    rec = dict(config=cfg, history=[dict(step=4, epoch=0, test_accuracy=0.3, val_loss=2.0, lambda1=0.5,
                                         temperature=2.0)],
               summary=dict(status="ok", final_accuracy=0.3),
               provenance=dict(kdlib_version="0", commit="x", torch="x", threads=1, machine="x", created="x"))
    runs = tmp_path / "cifar10_reduced" / "authors" / "runs"
    runs.mkdir(parents=True)
    (runs / "cifar10_reduced__gradient__seed0__0123456789abcdef.json").write_text(json.dumps(rec))
    monkeypatch.setenv("KDLIB_ARCHIVE", str(tmp_path))
    shown = []
    monkeypatch.setattr("kdlib.book.archive_page.show_markdown", shown.append)
    assert show_recheck("cifar10_reduced") is None
    assert any("Not re-checked" in s for s in shown)


def test_image_page_caveat_states_the_scale_and_the_separation_beside_table2():
    """The caveat under an image page's Table 2 slice names epochs, images, metaparameter steps and the travel
    rule, and says from the runs whether gradient-based tuning and no distillation are separated."""
    import pandas as pd

    from kdlib.book.image_page import ImagePage
    from kdlib.experiments.profiles import meta_steps, resolve_config

    page = ImagePage("fashion_mnist", "quick", seeds=3)
    rows = []
    for seed, (g, n) in enumerate([(0.70, 0.60), (0.50, 0.65), (0.62, 0.58)]):
        for m, acc in (("gradient", g), ("no_distillation", n)):
            rows.append(dict(dataset="fashion_mnist", method=m, seed=seed, step=1, test_accuracy=acc, phase=None))
    page.results = pd.DataFrame(rows)
    text = page.caveat()
    cfg = resolve_config("fashion_mnist", "gradient", "quick")
    steps = meta_steps("fashion_mnist", cfg.epochs, cfg.batch_size, cfg.n_train)
    assert f"{cfg.epochs} epochs on {cfg.n_train} images" in text and f"{steps} metaparameter steps" in text
    assert "Travel rule" in text and "3 seeds" in text
    assert "not larger than the seed spread" in text
    page.results.loc[page.results.method == "no_distillation", "test_accuracy"] = [0.60, 0.41, 0.52]
    assert "**above** without distillation" in page.caveat()


def test_protocols_section_explains_every_differing_field(tmp_path, monkeypatch):
    """Each field where the authors' protocol departs from kdlib's defaults has its reason on the page."""
    from kdlib.experiments import protocol as P
    from kdlib.book import archive_page

    shown = []
    monkeypatch.setattr(archive_page, "show_markdown", lambda text: shown.append(text))
    monkeypatch.setattr(archive_page, "show_table", lambda df, **kw: shown.append(df))
    monkeypatch.setenv("KDLIB_ARCHIVE", str(tmp_path / "empty"))
    monkeypatch.setenv("KDLIB_DATA", str(tmp_path / "nodata"))
    out = archive_page.show_protocols("cifar10_reduced")
    fields = set(P.protocol_differences("cifar10_reduced").field)
    assert fields and fields <= set(archive_page.DEFAULT_REASONS)
    table = shown[0]
    assert all(r for r in table["why kdlib's default"]) and len(table) == len(fields)
    assert set(out["branches"].source) <= {"authors' logs"}  # an empty archive adds no runs of ours


def test_error_line_is_in_a_readers_words(tmp_path):
    from kdlib.book.page import error_line

    err = FileNotFoundError(f"cifar10_reduced: no data found under the data root {tmp_path}. Searched:\n  {tmp_path}/a")
    line = error_line(err, "cifar10_reduced")
    assert line.startswith("Reduced CIFAR-10: no data found") and "Searched" not in line
    assert "cifar10_reduced" not in line


def test_an_archived_column_names_the_methods_it_lacks_and_why():
    """Full CIFAR-10's archived column has no hyperopt runs: the page says so and why (the paper prints no value
    and the authors left no log); a complete column says nothing; a method with a log is only "not yet"."""
    from kdlib.analysis.labels import METHODS
    from kdlib.book.archive_page import absent_methods

    recs = [{"config": {"method": m}} for m in METHODS if m != "hyperopt"]
    note = absent_methods("cifar10", recs)
    assert note.startswith("Hyperopt runs: the paper prints no Hyperopt value for CIFAR-10") and "yet" not in note
    assert absent_methods("cifar10", recs + [{"config": {"method": "hyperopt"}}]) == ""
    assert absent_methods("fashion_mnist", recs) == "Hyperopt runs yet"
