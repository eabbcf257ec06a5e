"""What RayMPIJob costs over plain mpirun, measured side by side: `python -m benchmarks` (`make bench`)."""
