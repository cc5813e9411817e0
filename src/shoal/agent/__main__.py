"""``python -m shoal.agent run --service S --port P -- CMD...`` (same as ``shoal run``)."""

from shoal.cli.run import standalone_app

if __name__ == "__main__":
    standalone_app()(prog_name="shoal-agent")
