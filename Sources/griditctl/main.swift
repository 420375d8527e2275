import GriditCLI

Griditctl.run()
