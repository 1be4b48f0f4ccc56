from noisebench.cli import app

app(prog_name="noisebench")
