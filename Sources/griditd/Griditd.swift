import ArgumentParser
@main struct Griditd: ParsableCommand {}
