import Benchmark
import RelayCore

/// `count` filters in the shape services use: `svcA.evtB.created`, `svcA.*.updated`, `svcA.evtB.>`.
func makeIndex(_ count: Int, cacheCapacity: Int) -> SubjectIndex<Int> {
    var index = SubjectIndex<Int>(cacheCapacity: cacheCapacity)
    for entry in 0..<count {
        let service = entry % 100
        let event = entry / 100
        switch entry % 3 {
        case 0: index.insert(entry, filter: "svc\(service).evt\(event).created")
        case 1: index.insert(entry, filter: "svc\(service).*.updated")
        default: index.insert(entry, filter: "svc\(service).evt\(event).>")
        }
    }
    return index
}

/// Subjects that each match a handful of the filters above.
let subjects = (0..<1000).map { n in "svc\(n % 100).evt\(n / 10).\(n % 2 == 0 ? "created" : "updated")" }

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal], scalingFactor: .kilo, maxDuration: .seconds(3))

    for size in [10_000, 100_000] {
        Benchmark("match, cached, \(size) subscriptions") { benchmark in
            var index = makeIndex(size, cacheCapacity: 4096)
            for subject in subjects { blackHole(index.match(subject)) }
            benchmark.startMeasurement()
            for iteration in benchmark.scaledIterations {
                blackHole(index.match(subjects[iteration % subjects.count]))
            }
        }

        Benchmark("match, uncached, \(size) subscriptions") { benchmark in
            // A cache of one entry: every other lookup walks the trie.
            var index = makeIndex(size, cacheCapacity: 1)
            benchmark.startMeasurement()
            for iteration in benchmark.scaledIterations {
                blackHole(index.match(subjects[iteration % subjects.count]))
            }
        }

        Benchmark("insert and remove, \(size) subscriptions") { benchmark in
            var index = makeIndex(size, cacheCapacity: 4096)
            benchmark.startMeasurement()
            for iteration in benchmark.scaledIterations {
                let filter = "svc\(iteration % 100).*.extra"
                index.insert(-1, filter: filter)
                index.remove(-1, filter: filter)
            }
        }
    }
}
