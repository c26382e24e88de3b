"""fetch's file names and URL lists: pure logic."""

from __future__ import annotations

import pytest

from aiohttp_resilient._cli._fetch._store import UrlListError, read_url_lines, safe_relative_path


@pytest.mark.parametrize(
    "url",
    [
        "http://h/../../etc/passwd",
        "http://h/%2e%2e/%2e%2e/x",
        "http://h/a/..%2f..%2fb",
        "http://h/.hidden",
        "http://[::1]:8080/a b?c=../d",
        "http://h/" + "x" * 500,
    ],
)
def test_names_stay_in_one_folder_per_host(url: str) -> None:
    """Whatever the URL, the name is ``folder/file``, both made of safe characters, neither
    starting with a dot, short enough for any file system."""
    folder, name = safe_relative_path(url).split("/")
    for part in (folder, name):
        assert part
        assert not part.startswith(".")
        assert set(part) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    assert len(name) <= 80


def test_names_differ_per_url_and_keep_the_extension() -> None:
    """Two URLs differing in the query only get two files; the extension is kept."""
    a = safe_relative_path("http://example.org:8080/docs/page.html?x=1")
    b = safe_relative_path("http://example.org:8080/docs/page.html?x=2")
    assert a != b
    assert a.startswith("example.org_8080/page-")
    assert a.endswith(".html")
    assert safe_relative_path("https://example.org/").startswith("example.org_443/index-")


def test_url_list_skips_blanks_and_comments_and_names_bad_lines() -> None:
    """Blank lines and # comments are skipped; a bad line is named by its number."""
    lines = ["http://a/1\n", "\n", "# note\n", " https://b/2 \n"]
    assert list(read_url_lines(lines, "list")) == ["http://a/1", "https://b/2"]
    with pytest.raises(UrlListError, match=r"list, line 2: 'a/b' is not an http:// or https://"):
        list(read_url_lines(["http://a/1", "a/b"], "list"))
