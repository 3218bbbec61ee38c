"""The error of a run that stopped itself for a reason it names (non-finite losses, a hung rank): no torch
import, so that the command line can catch it cheaply."""


class RunStopped(RuntimeError):
    pass
