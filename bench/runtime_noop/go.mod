module hearth/benchnoop

go 1.19
