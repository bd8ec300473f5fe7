from shapes import circle_area, square_area

print(f"{circle_area(1):.2f} {square_area(3)}")
