"""Simple remote objects that several test modules host in sessions.

This module travels to the worker by value (cloudpickle), like any module
of the client's own: it imports nothing of the test suite, and what a method
needs it imports inside itself.
"""


class Echo:
    def ping(self, x):
        return x


class Ping:
    def ping(self):
        return "pong"


class Counter:
    def __init__(self):
        self.n = 0

    def inc(self, k=1):
        self.n += k
        return self.n


class Sleeper:
    """Calls that take their time, and a session that misbehaves."""

    def sleep(self, s):
        import time as t
        t.sleep(s)
        return s

    def size(self, data):
        return len(data)

    def ping(self):
        return "pong"

    def deep(self, n):
        """A tree n directories deep in the session's directory."""
        import os as o
        for _ in range(n):
            o.mkdir("d")
            o.chdir("d")
        return n

    def spawn(self):
        """A process the session leaves running: its pid."""
        import subprocess as sp
        return sp.Popen(["sleep", "123"]).pid

    def spin(self):
        while True:
            pass

    def stubborn(self):
        """A call that ignores its deadline: the front must kill it."""
        while True:
            try:
                while True:
                    pass
            except TimeoutError:
                pass

    def items(self):
        yield from range(10)
