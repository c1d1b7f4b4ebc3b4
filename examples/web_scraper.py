#!/usr/bin/python3
"""The seed's WebScraper, against a page this script serves itself on
127.0.0.1, so that it never needs the internet.

Usage: web_scraper.py [HOST [PORT]]   (default localhost 50052)
"""
import asyncio
import http.server
import sys
import threading

from remotemedia.core.node import RemoteExecutorConfig
from remotemedia.remote import RemoteProxyClient

PAGE = b"<html><head><title>remotemedia demo page</title></head><body>hi</body></html>"


class WebScraper:
    def get_title(self, url):
        import requests
        from bs4 import BeautifulSoup

        response = requests.get(url, timeout=10)
        soup = BeautifulSoup(response.text, "html.parser")
        return soup.title.string if soup.title else "No title found"


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass


async def main(host: str, port: int) -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    config = RemoteExecutorConfig(host=host, port=port,
                                  pip_packages=["requests", "beautifulsoup4"])
    try:
        async with RemoteProxyClient(config) as client:
            scraper = await client.create_proxy(WebScraper())
            title = await scraper.get_title(url)
            print(f"Page title: {title}")
            assert title == "remotemedia demo page"
    finally:
        httpd.shutdown()


if __name__ == "__main__":
    host = sys.argv[1] if len(sys.argv) > 1 else "localhost"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 50052
    asyncio.run(main(host, port))
