"""Moderators (issue 24, item 1): named by tripcode, signed in on the viewer side with the
tripcode password, in Firefox ESR at Tor Browser's Safest level (no JavaScript, no cookies);
they hide and ban from the chat, never the broadcaster or each other, and the broadcaster
sees every action and undoes it."""
from __future__ import annotations

import re
import time

import pytest
import requests
from chat_support import BROADCASTER, ChatViewer, broadcaster_post, chat_server
from firefox import firefox  # noqa: F401 - the shared browser fixture
from support import livestream, wait_for

CHAT_STREAM = "none"


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    work = tmp_path_factory.mktemp("moderators")
    server = chat_server(work, work / "stream").start()
    yield server
    server.stop()


def tripcode_of(server, password: str, text: str) -> str:
    """Post `text` signed with `password`; the tripcode the chat shows for it."""
    viewer = ChatViewer(server)
    assert viewer.post(text, tripcode=password).status_code == 303
    return re.findall(r'class="trip">!([^<]+)<', viewer.messages())[-1]  # the newest


def message_id(server, text: str) -> int:
    page = requests.get(server.url + "/broadcaster", auth=BROADCASTER, timeout=5).text
    return int(re.search(r'id="bm(\d+)"(?:(?!</li>).)*' + re.escape(text), page, re.S)[1])


def test_a_moderator_without_javascript_hides_and_bans_and_the_broadcaster_undoes(
        chat, firefox):  # noqa: F811
    from marionette_driver.by import By

    moderator_trip = tripcode_of(chat, "moderator password", "hello, I moderate")
    added = livestream(chat.config_path, "moderators", "add", moderator_trip, "--note", "Ada")
    assert added.returncode == 0 and f"!{moderator_trip}  Ada" in added.stdout
    spammer = ChatViewer(chat)
    assert spammer.post("spam spam spam").status_code == 303
    time.sleep(1.1)  # the flood rule's second between two posts
    assert spammer.post("more spam").status_code == 303

    firefox.open(chat.url + "/chat/moderate")  # JavaScript off, cookies off
    firefox.client.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(
        "moderator password")
    firefox.follow(firefox.client.find_element(By.CSS_SELECTOR, "form button"))
    text = firefox.content_script("return document.body.textContent;")
    assert f"Moderating as !{moderator_trip}" in text and "Signed in" in text

    def press(message: int, label: str) -> str:
        item = firefox.client.find_element(By.ID, f"m{message}")
        button = next(b for b in item.find_elements(By.CSS_SELECTOR, "button")
                      if b.text == label)
        firefox.follow(button)
        return firefox.content_script("return document.body.textContent;")

    spam, more = message_id(chat, "spam spam spam"), message_id(chat, "more spam")
    assert "Done." in press(spam, "Hide")
    assert "Done." in press(more, "Ban 10 min")
    assert "spam spam spam" not in spammer.messages()
    assert spammer.post("let me back").status_code == 403

    # not on the broadcaster, not on another moderator
    broadcaster_post(chat, "post", message="the broadcaster speaks")
    mine = message_id(chat, "the broadcaster speaks")
    firefox.open(chat.url + firefox.content_script("return location.pathname + location.search;"))
    assert not firefox.client.find_element(By.ID, f"m{mine}").find_elements(
        By.CSS_SELECTOR, "button")
    own = message_id(chat, "hello, I moderate")
    assert "do not act on moderators" in press(own, "Hide")

    # slow mode, from the moderator's own frame
    slow = firefox.client.find_element(By.CSS_SELECTOR, "input[name=slow_seconds]")
    slow.clear()
    slow.send_keys("20")
    firefox.follow(firefox.client.find_element(By.CSS_SELECTOR, ".modes-form button"))
    assert "slow mode: one message per 20 s" in firefox.content_script(
        "return document.body.textContent;")

    page = requests.get(chat.url + "/broadcaster", auth=BROADCASTER, timeout=5).text
    assert f"!{moderator_trip} set the chat modes: slow mode: one message per 20 s" in page
    assert f"!{moderator_trip} hid a message:" in page
    assert f"!{moderator_trip} banned for 10 minutes:" in page
    for action_id in re.findall(r'name="action_id" value="(\w+)"', page):
        assert broadcaster_post(chat, "moderation/undo", action_id=action_id).status_code == 303
    assert "spam spam spam" in spammer.messages()
    wait_for(lambda: spammer.post("back again").status_code == 303, 5, 1.1, "the unban")
    assert "(undone)" in requests.get(chat.url + "/broadcaster", auth=BROADCASTER,
                                      timeout=5).text

    # taken off the list: the session ends with it
    assert livestream(chat.config_path, "moderators", "remove", moderator_trip).returncode == 0
    firefox.open(chat.url + firefox.content_script("return location.pathname + location.search;"))
    assert "Moderator sign-in" in firefox.content_script("return document.body.textContent;")
    firefox.open("about:blank")


def test_a_wrong_password_or_a_forged_form_does_nothing(chat):
    viewer = ChatViewer(chat)
    page = viewer.get("/chat/moderate").text
    check = re.search(r'name="check" value="(\w+)"', page)[1]
    wrong = requests.post(chat.url + f"/chat/moderate/sign-in?token={viewer.token}", timeout=10,
                          data={"token": viewer.token, "check": check, "password": "guess"})
    assert wrong.status_code == 403 and "not a moderator" in wrong.text
    forged = requests.post(chat.url + f"/chat/moderate?token={viewer.token}", timeout=10,
                           data={"token": viewer.token, "check": "0" * 32, "action": "hide",
                                 "message_id": "1"}, allow_redirects=False)
    assert forged.status_code == 303 and "out%20of%20date" in forged.headers["Location"]
    unsigned = requests.post(chat.url + f"/chat/moderate?token={viewer.token}", timeout=10,
                             data={"token": viewer.token, "check": check, "action": "hide",
                                   "message_id": "1"}, allow_redirects=False)
    assert "not%20signed%20in" in unsigned.headers["Location"]
    bad = livestream(chat.config_path, "moderators", "add", "not a trip!")
    assert bad.returncode == 1 and "is not a tripcode" in bad.stderr
