// Changes other hosts commit, as they commit (PostgreSQL: LISTEN/NOTIFY), turned into what this
// host does about them: wake the worker for a job to claim, stop a job of ours that was
// canceled elsewhere, tell `jobs watch` to re-read. A change missed costs latency only: the
// worker polls the queue and the heartbeat reads cancels as well.

import Foundation
import GriditJobQueue
import GriditJobSpec
import ServiceLifecycle

public struct JobChangeService: Service {
    let feed: any JobChangeFeed
    let monitor: JobMonitor

    public init(feed: any JobChangeFeed, monitor: JobMonitor) {
        self.feed = feed
        self.monitor = monitor
    }

    public func run() async throws {
        let monitor = self.monitor
        await cancelWhenGracefulShutdown {
            await feed.followChanges { event in monitor.apply(event) }
        }
    }
}

extension JobMonitor {
    func apply(_ event: JobChangeEvent) {
        switch event {
        case .lookAgain:
            wake()
        case .job(let change):
            if JobState.claimable.contains(change.state) { wake() }
            if change.cancelRequested, change.state == .running, isRunning(change.id) {
                requestStop(change.id, .cancel)
            }
            changed(change.id)
        }
    }
}
