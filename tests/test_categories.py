"""The layer category tree (图层目录分类): the shipped file, the API, and validation of bad files."""

from __future__ import annotations

import pytest

from cityops.base.categories import CATEGORIES_FILE, Category, CategoryTree, load_categories
from cityops.core.errors import InvalidInput


@pytest.fixture(scope="module")
def tree() -> CategoryTree:
    return load_categories()


def test_shipped_file_loads_and_is_cached(tree):
    assert isinstance(tree, CategoryTree)
    assert load_categories() is tree
    assert load_categories(CATEGORIES_FILE) is load_categories(CATEGORIES_FILE)


def test_twelve_majors_about_eighty_minors(tree):
    majors = tree.majors()
    assert [m.code for m in majors] == [f"{i:02d}" for i in range(1, 13)]
    assert all(m.parent is None and m.description_zh and m.description_en for m in majors)
    assert 78 <= len(tree.minors()) <= 84


def test_minor_codes_start_with_their_major(tree):
    for major in tree.majors():
        minors = tree.minors(major.code)
        assert minors, major.code
        for minor in minors:
            assert len(minor.code) == 4 and minor.code.isdigit()
            assert minor.code.startswith(major.code)
            assert minor.parent == major.code
            assert minor.geometry in (None, "point", "line", "polygon", "any")


def test_names_non_empty_and_unique_within_a_major(tree):
    for major in tree.majors():
        assert major.name_zh.strip() and major.name_en.strip()
        minors = tree.minors(major.code)
        zh = [m.name_zh for m in minors]
        en = [m.name_en for m in minors]
        assert all(n.strip() for n in zh + en)
        assert len(set(zh)) == len(zh), major.code
        assert len(set(en)) == len(en), major.code


def test_get_and_contains(tree):
    cat = tree.get("0302")
    assert cat == Category("0302", "地质灾害隐患点", "Geohazard sites", "03", "point")
    assert tree.get("03").name_zh == "地质"
    assert "0302" in tree and "03" in tree
    assert "9999" not in tree and 302 not in tree and None not in tree


def test_get_unknown_code_raises_invalid_input_naming_it(tree):
    with pytest.raises(InvalidInput) as info:
        tree.get("9999")
    assert "9999" in info.value.message
    assert "to_tree" in info.value.message  # says how to list the codes
    with pytest.raises(InvalidInput, match="0302"):
        tree.minors("0302")  # a minor is not a major


def test_to_tree_languages(tree):
    zh = tree.to_tree()
    assert len(zh) == 12
    assert zh[2]["code"] == "03" and zh[2]["name"] == "地质"
    assert {"code": "0302", "name": "地质灾害隐患点", "geometry": "point", "children": []} in zh[2]["children"]
    en = tree.to_tree("en")
    assert en[2]["name"] == "Geology"
    assert en[2]["children"][1]["name"] == "Geohazard sites"
    by_code = {c.code: c for c in tree}
    for major in en:
        assert major["name"] == by_code[major["code"]].name_en
        for child in major["children"]:
            assert child["name"] == by_code[child["code"]].name_en
    assert sum(len(m["children"]) for m in en) == len(tree.minors())
    with pytest.raises(InvalidInput, match="fr"):
        tree.to_tree("fr")


# --- validation of crafted bad files ------------------------------------------------------------------

GOOD = """
version = 1

[[majors]]
code = "01"
name_zh = "基础地理"
name_en = "Base geography"

[[majors.minors]]
code = "0101"
name_zh = "行政区划"
name_en = "Administrative divisions"
geometry = "polygon"

[[majors]]
code = "02"
name_zh = "房屋建筑"
name_en = "Buildings"

[[majors.minors]]
code = "0201"
name_zh = "房屋面"
name_en = "Building footprints"
"""


def _load(tmp_path, text, name="categories.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_categories(path)


def test_small_good_file_loads(tmp_path):
    tree = _load(tmp_path, GOOD)
    assert [m.code for m in tree.majors()] == ["01", "02"]
    assert [m.code for m in tree.minors("02")] == ["0201"]
    assert tree.get("0201").geometry is None


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("version = 1", "version = 2", "unsupported"),
        ("version = 1", "", "unsupported"),
        ('code = "0201"', 'code = "0101"', "duplicate"),
        ('code = "02"\n', 'code = "01"\n', "duplicate"),
        ('code = "0201"', 'code = "0301"', "does not start with"),
        ('code = "02"\n', 'code = "2"\n', "2 digits"),
        ('code = "0201"', 'code = "02011"', "4 digits"),
        ('code = "0201"', 'code = "020A"', "4 digits"),
        ('code = "0201"', "code = 201", "4 digits"),
        ('name_zh = "房屋面"', "", "missing name_zh"),
        ('name_en = "Building footprints"', 'name_en = "  "', "missing name_en"),
        ('name_zh = "基础地理"', "", "missing name_zh"),
        ('geometry = "polygon"', 'geometry = "surface"', "unknown geometry"),
    ],
)
def test_bad_file_raises_value_error_naming_file_and_problem(tmp_path, old, new, problem):
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    with pytest.raises(ValueError) as info:
        _load(tmp_path, text, name=f"bad-{abs(hash((old, new)))}.toml")
    message = str(info.value)
    assert "bad-" in message and ".toml" in message
    assert problem in message


def test_major_without_minors_is_rejected(tmp_path):
    text = GOOD + '\n[[majors]]\ncode = "03"\nname_zh = "地质"\nname_en = "Geology"\n'
    with pytest.raises(ValueError, match=r"empty\.toml: major 03 has no minor categories"):
        _load(tmp_path, text, name="empty.toml")


def test_invalid_toml_is_value_error(tmp_path):
    with pytest.raises(ValueError, match="broken.toml"):
        _load(tmp_path, "version = = 1", name="broken.toml")
