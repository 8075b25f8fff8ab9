"""Asking an operator before a command changes many instances (the bulk and migrate
commands)."""

from __future__ import annotations

import asyncio
import sys


async def confirmed(command: str, question: str, *, yes: bool, flag_hint: str) -> bool:
    """True with ``--yes``; else ask ``question`` on the terminal. Without a terminal, say
    to pass ``--yes`` (``flag_hint`` finishes the sentence) and refuse."""
    if yes:
        return True
    if not sys.stdin.isatty():
        print(f"{command}: not a terminal: pass --yes to {flag_hint}", file=sys.stderr)
        return False
    answer = await asyncio.to_thread(input, f"{question} [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        print("nothing done", file=sys.stderr)
        return False
    return True


__all__ = ["confirmed"]
