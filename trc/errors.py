"""The one exception type ``trc`` raises for bad input."""


class TRCError(ValueError):
    """Bad input (argument, file, checkpoint, dataset), explained in one sentence.

    The CLI turns it into a one-line message on stderr and exit status 2.
    """
