"""The live status page in a real headless Chromium (Debian's chromium and chromedriver): it loads
from the hub alone, refreshes itself, and the numbers it shows are /varz's."""
import asyncio
import json
import os
import threading
import urllib.request

import nats
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import ROOT, settled


class Traffic(threading.Thread):
    """nats-py publishing about a hundred messages a second to a subscriber of its own."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.url = url
        self.running = threading.Event()
        self.running.set()
        self.started = threading.Event()

    def run(self):
        async def go():
            client = await nats.connect(self.url)

            async def ignore(msg):
                pass

            await client.subscribe("news.*", cb=ignore)
            await settled(client)
            self.started.set()
            while self.running.is_set():
                await client.publish("news.today", b"x" * 64)
                await asyncio.sleep(0.01)  # pacing the traffic, not waiting for anything
            await settled(client)
            await client.close()

        asyncio.run(go())


def browser():
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(flag)
    # The system's chromedriver: nothing is fetched.
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def test_the_status_page_shows_what_varz_says(hub):
    traffic = Traffic(hub.nats_url)
    traffic.start()
    assert traffic.started.wait(10)
    driver = browser()
    try:
        driver.get(hub.http_url + "/")
        refreshed = lambda: int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-refreshed") or 0)
        WebDriverWait(driver, 20).until(lambda _: refreshed() >= 4)
        # A rate is plotted while messages flow.
        assert int(driver.find_element(By.ID, "rate-in").text) > 0
        assert "news.*" in driver.find_element(By.ID, "subjects").text
        assert "nats" in driver.find_element(By.ID, "sessions").text
        if os.environ.get("RELAY_SCREENSHOT"):
            driver.save_screenshot(os.environ["RELAY_SCREENSHOT"])
        traffic.running.clear()
        traffic.join(10)
        # Once the traffic has stopped, two more refreshes; then the page and /varz agree.
        seen = refreshed()
        WebDriverWait(driver, 20).until(lambda _: refreshed() >= seen + 2)
        with urllib.request.urlopen(hub.http_url + "/varz", timeout=5) as response:
            varz = json.loads(response.read())
        for key in ("in_msgs", "out_msgs", "subscriptions", "connections"):
            assert driver.find_element(By.ID, f"varz-{key}").text == str(varz[key]), key
        assert varz["in_msgs"] > 100
        assert driver.find_element(By.ID, "status").text == "healthy"
    finally:
        driver.quit()
