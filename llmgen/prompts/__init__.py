"""Prompt construction shared by every entry point: the FormatSpread format grammar (``formats``), the
requests and scoring of formats (``format_eval``) and chat templating (``chat``)."""
