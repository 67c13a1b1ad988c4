using BenchmarkDotNet.Running;

// Micro-benchmarks of the block layer's building blocks. Whole-path throughput is measured by
// `pfnblock bench` and bench/foundation-bench.sh, side by side with fio.
//   dotnet run -c Release --project bench/PfnBlock.Microbench -- --filter '*'
BenchmarkSwitcher.FromAssembly(typeof(PfnBlock.Microbench.BlockLayerBenchmarks).Assembly).Run(args);
