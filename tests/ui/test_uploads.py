"""An uploaded file is kept on the server under the hash of its bytes, so a link can name it: the link reopens the
page with the same file; a link naming a file this server does not have is refused in one line."""

from __future__ import annotations

from tests.ui.conftest import ok, open_app
from ui.uploads import keep_upload, read_upload

WORDS = "fr,zh,en\neau,水,water\nfeu,火,fire\n"


def test_a_kept_upload_is_read_back_by_its_id():
    id = keep_upload("../my words.csv", WORDS.encode())
    assert id == keep_upload("again.csv", WORDS.encode())  # the same bytes, the same id
    kept = read_upload(id)
    assert kept.name == "my_words.csv" and kept.data == WORDS.encode()
    assert read_upload("../../etc/passwd") is None and read_upload("0" * 16) is None


def test_a_link_reopens_the_page_with_the_uploaded_word_list(tiny_folder):
    id = keep_upload("words.csv", WORDS.encode())
    at = ok(open_app({"model": str(tiny_folder), "words": id, "n": "2", "shots": "1", "run": "translation"},
                     page="pages/translation.py"))
    assert any("Using **words.csv**" in c.value for c in at.caption)
    assert list(at.dataframe[0].value["source_word"]) == ["eau", "feu"]  # the upload's words, not the shipped list


def test_a_link_naming_a_file_this_server_does_not_have_is_refused(tiny_folder):
    at = open_app({"model": str(tiny_folder), "words": "0123456789abcdef", "run": "translation"},
                  page="pages/translation.py")
    assert not at.exception
    assert len(at.error) == 1 and "is not on this server (upload it again)" in at.error[0].value
    assert "225 words in assets/words.csv" in at.info[0].value  # the shipped list, nothing run
