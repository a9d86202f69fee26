"""The indicator catalogue: the shipped pack, a district's additions and township subsets, the full-scale generated
catalogue, and bad files refused with file, line and field named."""

from __future__ import annotations

import textwrap

import pytest

from cityops.indicators import catalogue as catalogues
from cityops.indicators import formula, generate
from cityops.indicators.catalogue import CatalogueError

DISTRICT = textwrap.dedent('''\
    version = 1

    [[subrunway]]
    code = "L01"
    runway = "S5R01"
    name_zh = "汛期巡查"
    name_en = "Flood-season patrols"
    owner = "gzj"
    levels = ["district", "township"]
    issued = "local"

    [[indicator]]
    code = "patrols_done"
    subrunway = "L01"
    name_zh = "巡查完成次数"
    name_en = "Patrols done"
    unit = "次"
    direction = "higher"
    period = "weekly"
    bands = { yellow = 3, red = 1 }
    levels = ["district", "township"]
    rollup = "sum"
    owner = "gzj"
    source = { kind = "reported", due_day = 2 }

    [[township]]
    code = "500154107"
    subrunways = ["L01", "S5R01S01", "S4R01S01"]
    ''')


def test_default_pack_has_the_eight_sectors_and_the_platforms_runways():
    cat = catalogues.load()
    assert [s.name_zh for s in cat.sectors.values()] == list(generate.SECTORS)
    names = {r.name_zh for r in cat.runways.values()}
    assert {"房屋安全", "地质灾害防治", "防汛", "基层治理", "转移避险", "智慧工地"} <= names
    kinds = {i.source.kind for i in cat.indicators.values()}
    assert kinds == {"metric", "reported", "formula"}


def test_district_additions_and_township_subset(tmp_path):
    (tmp_path / "kaizhou.toml").write_text(DISTRICT, encoding="utf-8")
    cat = catalogues.load(tmp_path)
    assert cat.subrunways["L01"].issued == "local" and "patrols_done" in cat.indicators
    tree = catalogues.tree(cat, "500154107")
    subs = {sr["code"] for s in tree for r in s["runways"] for sr in r["subrunways"]}
    assert subs == {"L01", "S5R01S01", "S4R01S01"}
    assert len({sr["code"] for s in catalogues.tree(cat) for r in s["runways"] for sr in r["subrunways"]}) == len(cat.subrunways)


def test_generated_city_scale_catalogue_loads(tmp_path):
    pack, _ = generate.write(tmp_path, townships=["500154001", "500154002"])
    cat = catalogues.load(tmp_path / "district", pack=pack)
    subs = cat.subrunways.values()
    assert (len(cat.sectors), len(cat.runways), sum(s.issued == "city" for s in subs), sum(s.issued == "local" for s in subs)) \
        == (8, 68, 249, 104)
    assert len(cat.townships["500154001"].subrunways) == 22
    assert {i.source.kind for i in cat.indicators.values()} == {"metric", "reported", "formula"}


FORMULA = '''
    [[indicator]]
    code = "{code}"
    subrunway = "L01"
    name_zh = "x"
    name_en = "x"
    unit = "件"
    direction = "lower"
    period = "live"
    bands = {{ red = 1 }}
    levels = ["district"]
    rollup = "formula"
    owner = "o"
    source = {{ kind = "formula", expr = "{expr}" }}
    '''


def _bad(tmp_path, text: str) -> list:
    (tmp_path / "kaizhou.toml").write_text(DISTRICT, encoding="utf-8")
    (tmp_path / "z_bad.toml").write_text("version = 1\n" + textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(CatalogueError) as exc:
        catalogues.load(tmp_path)
    for p in exc.value.problems:
        assert p.file.endswith("z_bad.toml"), str(p)
    return exc.value.problems


def _line(tmp_path, needle: str) -> int:
    lines = (tmp_path / "z_bad.toml").read_text(encoding="utf-8").splitlines()
    return [i for i, line in enumerate(lines, start=1) if needle in line][-1]


def test_unknown_metric_source_named_with_line(tmp_path):
    (p,) = _bad(tmp_path, FORMULA.format(code="x1", expr="1").replace('{ kind = "formula", expr = "1" }',
                                                                       '{ kind = "metric", metric = "events.nothing" }')
                .replace('rollup = "formula"', 'rollup = "sum"'))
    assert "unknown source" in p.message and p.field == "indicator x1: source.metric"
    assert p.line == _line(tmp_path, "events.nothing")


def test_bad_metric_parameter(tmp_path):
    (p,) = _bad(tmp_path, '''
        [[indicator]]
        code = "x2"
        subrunway = "L01"
        name_zh = "x"
        name_en = "x"
        unit = "件"
        direction = "lower"
        period = "live"
        bands = { red = 1 }
        levels = ["district"]
        rollup = "sum"
        owner = "o"
        source = { kind = "metric", metric = "events.cases", params = { count = "lost" } }
        ''')
    assert p.field == "indicator x2: source.params.count" and "lost" in p.message
    assert p.line == _line(tmp_path, 'count = "lost"')




def test_formula_cycle(tmp_path):
    problems = _bad(tmp_path, FORMULA.format(code="fa", expr="fb + 1") + FORMULA.format(code="fb", expr="fa * 2"))
    assert any("formula cycle: fa → fb → fa" in p.message for p in problems), problems
    assert all(p.field.endswith("source.expr") for p in problems)


def test_formula_unknown_input_and_forbidden_syntax(tmp_path):
    problems = _bad(tmp_path, FORMULA.format(code="fc", expr="nothing_here + 1") +
                    FORMULA.format(code="fd", expr="__import__('os').system('true')"))
    messages = {p.field: p.message for p in problems}
    assert "unknown source: no indicator nothing_here" in messages["indicator fc: source.expr"]
    assert "not allowed" in messages["indicator fd: source.expr"]


def test_missing_bands(tmp_path):
    (p,) = _bad(tmp_path, FORMULA.format(code="fe", expr="patrols_done").replace("bands = { red = 1 }\n", ""))
    assert p.field == "indicator fe: bands" and "missing bands" in p.message
    assert p.line == _line(tmp_path, 'code = "fe"') - 1  # the [[indicator]] header


def test_disordered_bands(tmp_path):
    (p,) = _bad(tmp_path, FORMULA.format(code="ff", expr="patrols_done").replace("bands = { red = 1 }", "bands = { yellow = 5, red = 1 }"))
    assert p.field == "indicator ff: bands" and "yellow → orange → red" in p.message


def test_duplicate_code_names_both_places(tmp_path):
    (p,) = _bad(tmp_path, FORMULA.format(code="patrols_done", expr="1"))
    assert p.field == "indicator patrols_done: code" and "duplicate code" in p.message and "kaizhou.toml:12)" in p.message  # its [[indicator]] header
    assert p.line == _line(tmp_path, 'code = "patrols_done"')


def test_unknown_unit_level(tmp_path):
    (p,) = _bad(tmp_path, FORMULA.format(code="fg", expr="1").replace('levels = ["district"]', 'levels = ["district", "street"]'))
    assert p.field == "indicator fg: levels" and "unknown unit level 'street'" in p.message
    assert p.line == _line(tmp_path, '"street"')


def test_all_problems_reported_together(tmp_path):
    problems = _bad(tmp_path, FORMULA.format(code="fh", expr="zz") + FORMULA.format(code="fi", expr="1").replace(
        'levels = ["district"]', 'levels = ["moon"]'))
    assert len(problems) == 2


def test_bad_deployment_file_stops_the_server(tmp_path):
    from cityops.app import create_app
    from cityops.core.settings import Settings

    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "x.toml").write_text("version = 1\n[[sector]]\ncode = 5\n", encoding="utf-8")
    from cityops.core.catalogues import CatalogueError as StartUpError

    with pytest.raises(StartUpError, match=r"x.toml:3, field sector 5: code: Input should be a valid string"):
        create_app(Settings(data_dir=tmp_path / "data", secret_key="s", indicators_dir=conf, wiring=False))


def test_formula_language():
    f = formula.parse("max(a, b) / (c - 1) + -abs(d)")
    assert f.inputs == {"a", "b", "c", "d"}
    assert f.evaluate({"a": 3, "b": 5, "c": 3, "d": -1}) == 1.5
    assert f.evaluate({"a": 3, "b": 5, "c": 1, "d": 1}) is None  # division by zero: no value
    assert f.evaluate({"a": None, "b": 5, "c": 3, "d": 1}) is None
    for bad in ("a ** 2", "a.b", "a if b else c", "[a]", "'x'", "f(a)", "a < b"):
        with pytest.raises(formula.FormulaError):
            formula.parse(bad)


def test_cli_check_names_the_bad_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cityops.cli import app

    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "kaizhou.toml").write_text(DISTRICT, encoding="utf-8")
    monkeypatch.setenv("CITYOPS_INDICATORS_DIR", str(conf))
    r = CliRunner().invoke(app, ["indicators", "check", "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 0 and "11 city + 4 local sub-runways" in r.output.replace("\n", " "), r.output
    (conf / "z.toml").write_text(FORMULA.format(code="zz", expr="zz + 1").join(["version = 1\n", ""]), encoding="utf-8")
    r = CliRunner().invoke(app, ["indicators", "check", "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 1 and "formula cycle: zz → zz" in r.output.replace("\n", " "), r.output


def test_unknown_pack_is_named(tmp_path):
    with pytest.raises(CatalogueError, match="no such pack"):
        catalogues.pack_path("nowhere")
