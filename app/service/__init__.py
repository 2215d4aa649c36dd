"""Qt-free service layer that both the CLI and the GUI call."""
