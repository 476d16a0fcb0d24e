from avseg_cli.main import run

run()
