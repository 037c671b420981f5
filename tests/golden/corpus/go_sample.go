package main

import (
	"fmt"
	"strings"
)

// Point is a 2-D point.
type Point struct {
	X, Y float64
}

func (p Point) String() string {
	return fmt.Sprintf("(%g, %g)", p.X, p.Y)
}

func main() {
	pts := []Point{{1, 2}, {3.5, -4}}
	var b strings.Builder
	for i, p := range pts {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(p.String())
	}
	fmt.Println(b.String())
}
