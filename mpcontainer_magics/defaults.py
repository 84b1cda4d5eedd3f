"""What every front-end falls back on when the user names nothing: kept apart from the
client so that `%load_ext` (the magics' traitlets) can read them without loading it."""

#: The image a cell, session or run uses when none is given.
DEFAULT_IMAGE = "alpine:3.23"  # Alpine 3.23: main repository supported until 2027-11-01
#: The engine kinds ``connect(engine=)``, ``%config ContainerMagics.engine`` and
#: ``MPC_ENGINE`` accept; "auto" is Docker when a daemon answers, else embedded.
ENGINES = ("auto", "docker", "embedded")
